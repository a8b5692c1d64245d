/* constrain: the constraint compiler's one interface (runtime/constrain/).
 *
 * A constraint (regex, JSON schema, choice list, EBNF/GBNF grammar) compiles
 * to a cons_program: an immutable byte-level automaton (a minimised DFA when
 * the language is regular, a pushdown/Earley recogniser when it is not),
 * shareable by any number of requests and threads, reference counted, and
 * cached by (kind, text, options) so the same constraint is compiled once per
 * process. A cons_vocab indexes a tokenizer's vocabulary as a trie of token
 * bytes. A cons_matcher is one request's position inside a program: it gives
 * the token mask for the next step, accepts the token actually appended,
 * says whether the text so far is complete, and names the bytes forced from
 * here on (jump-forward, the compressed FSM).
 *
 * Strictness: a constraint that cannot be compiled (syntax error, unsupported
 * JSON-schema keyword, state budget exceeded) is an error with a location;
 * nothing is ever silently dropped or relaxed.
 *
 * Depends on util/ only: lang/check compiles literal constraints with it, the
 * scheduler masks logits with it, the server validates requests with it.
 * Thread safety: programs and vocabs may be shared between threads (mask
 * caches inside them are locked); a matcher belongs to one thread at a time.
 */
#ifndef SGL_CONSTRAIN_H
#define SGL_CONSTRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

typedef enum cons_kind {
    CONS_REGEX,       /* docs/language.md regex dialect; whole-output match */
    CONS_JSON_SCHEMA, /* JSON text of a draft 2020-12 schema (supported subset) */
    CONS_CHOICES,     /* JSON array of strings: output is exactly one of them */
    CONS_GRAMMAR      /* EBNF / GBNF text; start rule "root" (else the first rule) */
} cons_kind;

/* "regex" / "json_schema" / "choices" / "grammar". */
const char *cons_kind_name(cons_kind k);

/* Where and why a compile failed. Every field is set by cons_compile on error
 * (unused location fields: offset -1, line/col 0, pointer ""). */
typedef struct cons_diag {
    char message[512]; /* what is wrong, without the location */
    int32_t offset;    /* byte offset into the constraint text, or -1 */
    int32_t line, col; /* 1-based position in the text (grammars, schemas), or 0 */
    char pointer[256]; /* JSON schema: JSON pointer of the offending part ("/properties/a/format"), or "" */
} cons_diag;

typedef struct cons_options {
    int32_t max_states;   /* DFA state budget; over it compile fails naming it (default 20000) */
    bool ws_flexible;     /* JSON: whitespace allowed between tokens (default false: compact) */
    int32_t ws_max;       /* JSON, flexible: longest whitespace run allowed (default 4) */
} cons_options;

cons_options cons_options_default(void);

typedef struct cons_program cons_program;

/* Compiles text[0..len) as a constraint of the given kind (opt NULL: defaults).
 * Returns a program with one reference (release with cons_program_release),
 * or NULL with *diag filled. */
cons_program *cons_compile(cons_kind kind, const char *text, size_t len,
                           const cons_options *opt, cons_diag *diag);
/* As cons_compile, through a process-wide cache keyed by (kind, text, options):
 * the same constraint returns the same program (a new reference) without
 * compiling again. Failures are not cached. */
cons_program *cons_compile_cached(cons_kind kind, const char *text, size_t len,
                                  const cons_options *opt, cons_diag *diag);
cons_program *cons_program_retain(cons_program *p); /* returns p */
void cons_program_release(cons_program *p);          /* NULL ok */
cons_kind cons_program_kind(const cons_program *p);
/* 1 when bytes[0..n) is a complete match of the program, 0 when not. */
int cons_program_match(const cons_program *p, const char *bytes, size_t n);

/* True when p runs as a DFA (masks cached per state); false for the Earley
 * recogniser (grammars and schemas that recurse). */
bool cons_program_is_dfa(const cons_program *p);
/* Automaton size: DFA states, or NFA states of the recogniser. */
int32_t cons_program_states(const cons_program *p);

/* Drops every program of the compile cache (for leak checks in tests). */
void cons_cache_clear(void);

/* ---- vocabulary ------------------------------------------------------------ */

typedef struct cons_vocab cons_vocab;

/* Indexes a vocabulary: pieces[i][0..lens[i]) are token i's raw bytes (as
 * tok_piece gives them). Tokens with is_special[i] are never allowed as text
 * inside a constraint; eos_ids[0..n_eos) are allowed exactly where the
 * constraint accepts. Everything is copied. Returns the vocab (free with
 * cons_vocab_free) or NULL with err set. */
cons_vocab *cons_vocab_new(int32_t n_vocab, const char *const *pieces, const size_t *lens,
                           const bool *is_special, const int32_t *eos_ids, int32_t n_eos,
                           sgl_error *err);
void cons_vocab_free(cons_vocab *v);
int32_t cons_vocab_size(const cons_vocab *v);
/* Words in a token mask: (n_vocab + 31) / 32. */
size_t cons_mask_words(const cons_vocab *v);

/* ---- matcher: one request's place in a program ---------------------------- */

typedef struct cons_matcher cons_matcher;

/* A matcher at the start of p (retained; p may be NULL: any bytes, useful with
 * a prefix). prefix[0..n_prefix) (may be empty) must come first, before p's
 * language: token healing gives the bytes of the backed-off prompt token here.
 * v must outlive the matcher. Returns NULL with err set when memory runs out. */
cons_matcher *cons_matcher_new(cons_program *p, const cons_vocab *v, const char *prefix,
                               size_t n_prefix, sgl_error *err);
void cons_matcher_free(cons_matcher *m);

/* Writes the allowed next tokens into mask[cons_mask_words(v)] (bit t % 32 of
 * word t / 32 set = token t allowed): tokens whose bytes keep the constraint
 * alive, plus the EOS ids when the text so far is a complete match. Special
 * tokens never. Returns the number of allowed tokens (0: dead end). */
int32_t cons_matcher_mask(cons_matcher *m, uint32_t *mask);
/* Advances by token t (its bytes; an EOS id only where accepting, which
 * finishes the matcher). Returns 0, or -1 when t is not allowed (the matcher
 * is unchanged). */
int cons_matcher_accept_token(cons_matcher *m, int32_t t);
/* Advances by raw bytes (jump-forward text). Returns 0, or -1 when they do
 * not keep the constraint alive (the matcher is unchanged). */
int cons_matcher_accept_bytes(cons_matcher *m, const char *b, size_t n);
/* The bytes so far are a complete match (EOS would be allowed). */
bool cons_matcher_accepting(const cons_matcher *m);
/* Some byte can still follow (false: accepting and nothing more fits, so the
 * request should finish now). */
bool cons_matcher_can_continue(const cons_matcher *m);
/* Jump-forward: writes into buf (up to cap bytes) the longest byte string
 * every continuation must start with from here (stops at an accepting state
 * or a choice), and returns its length (0: nothing forced). The matcher does
 * not move: the caller appends the bytes with cons_matcher_accept_bytes. */
size_t cons_matcher_forced(cons_matcher *m, char *buf, size_t cap);
/* Bytes consumed so far (prefix included). */
size_t cons_matcher_position(const cons_matcher *m);
/* 1 when bytes b[0..n) would keep the constraint alive from here (what
 * cons_matcher_accept_bytes would accept), else 0; the matcher does not move.
 * The slow reference the token masks are tested against. */
int cons_matcher_probe(cons_matcher *m, const char *b, size_t n);
/* A shortest byte string that completes the text so far to a full match
 * (DFA: breadth-first search; recogniser: closing bytes first, bounded), for
 * finishing a cut output. Writes up to cap bytes into buf and returns the
 * length, or (size_t)-1 when none was found within cap. The matcher does not
 * move. */
size_t cons_matcher_complete(cons_matcher *m, char *buf, size_t cap);
/* An independent copy of m at the same place (same program and vocab), or
 * NULL with err set. Free with cons_matcher_free. */
cons_matcher *cons_matcher_clone(const cons_matcher *m, sgl_error *err);

#endif
