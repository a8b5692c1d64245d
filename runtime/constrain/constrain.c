/* constrain.c: the interface of constrain.h: compiling (front end -> rules ->
 * automaton), the process-wide compile cache, the vocabulary trie, matchers,
 * token masks (a walk of the trie through the automaton, cached per DFA
 * state and vocabulary) and jump-forward.
 *
 * The vocabulary trie is stored in preorder: node i has a byte, a depth and
 * skip[i], the first node after its subtree. A mask walk keeps one automaton
 * state per depth and jumps over a whole subtree as soon as its first byte
 * kills the automaton, so the cost is the number of live trie nodes, not the
 * number of tokens times their length; a subtree made only of bytes of one
 * category (cat_byte) that the state accepts throughout is set whole.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

#define MAX_TOKEN_BYTES 4096
/* Mask classes tell states apart by strings up to this long; the few longer
 * tokens are checked one by one from the actual state on every cached mask. */
#define CLASS_DEPTH 16
#define MEMO_BLK 1024 /* states per block of the mask-class memo */
#define CLASS_AFTER 16 /* walks of a lazy DFA's masks before mask classes are used */

struct cons_program {
    atomic_int refs;
    cons_kind kind;
    cons_dfa *dfa; /* exactly one of dfa / nfa */
    cons_nfa *nfa;
    pthread_mutex_t mu;
    struct mask_cache *caches;
    struct emask **emasks; /* recogniser masks by earley_key (hash table) */
    int32_t emask_cap, emask_n;
};

/* A recogniser mask for one vocabulary and one earley_key. */
typedef struct emask {
    uint64_t serial, hash;
    int32_t *key;
    size_t key_len;
    uint32_t *mask;
    int32_t count;
    struct emask *next;
} emask;

#define EMASK_MAX 4096 /* entries per program; beyond, masks are walked each time */

/* One round of mask classes: the distinct tuples of the round before (see
 * mask_class), of varying length, in an open-addressing table; a tuple's
 * index is its class at this round. */
typedef struct class_round {
    int32_t *data;  /* tuples back to back */
    int64_t n_data, cap_data;
    int64_t *off;   /* tuple i: data[off[i] .. off[i + 1]) */
    int32_t n, cap;
    int32_t *tab;   /* tuple index or -1; tab_cap a power of two */
    int32_t tab_cap;
} class_round;

/* Masks of DFA states for one vocabulary (by serial), per mask class. The
 * classes are computed on demand, state by state (see mask_class). */
typedef struct mask_cache {
    uint64_t serial;
    bool exact;        /* masks per state (a DFA built whole: at most a few
                        * thousand states) rather than per mask class */
    int32_t depth;     /* rounds of refinement (the longest token, at most CLASS_DEPTH) */
    int32_t n_blk;     /* memo blocks per round (of MEMO_BLK states) */
    int32_t **memo;    /* depth x n_blk blocks, allocated when first used: 1 + class
                        * of a state after each round, 0 unknown */
    class_round *rounds;
    uint32_t **masks;  /* per class of the last round, NULL until computed */
    int32_t *counts;
    int32_t n_masks;   /* capacity of masks / counts */
    /* lazy DFAs: masks per state too, the only ones until CLASS_AFTER walks
     * (classes cost a neighbourhood of states, built and refined, which
     * pays only where many states share masks: long strings) */
    uint32_t **smasks;
    int32_t *scounts;
    int32_t n_smasks;
    int32_t walks;
    struct mask_cache *next;
} mask_cache;

static void mask_cache_free(struct mask_cache *c);

struct cons_vocab {
    uint64_t serial;
    int32_t n_vocab;
    uint8_t *special;
    int32_t *eos;
    int32_t n_eos;
    char *blob; /* token bytes */
    size_t *off, *len;
    /* trie in preorder */
    int32_t n_nodes, max_depth;
    struct tnode {
        uint8_t byte;
        uint8_t ntok;  /* tokens ending here: toks[tok .. tok + ntok) */
        uint16_t depth;
        int32_t skip;  /* first node after this one's subtree */
        int32_t tok;
    } *node;
    int32_t *toks;
    int32_t *long_toks; /* text tokens longer than CLASS_DEPTH */
    int32_t n_long;
    /* Byte-category summaries: ptok lists the trie's tokens in preorder, the
     * tokens of node i's subtree (itself included) being
     * ptok[ptok_lo[i] .. ptok_lo[node[i].skip]); sub_h[i] is the height of
     * the subtree below i (0: a leaf, or 255 and over) and sub_cat[i] has bit
     * c set when every byte below i is of category c (cat_byte). A walk whose
     * state accepts every string of such bytes that long sets the whole
     * subtree without visiting it. */
    int32_t *ptok, *ptok_lo;
    uint8_t *sub_h, *sub_cat;
    /* sub_set[sub_idx[i]]: the bytes below node i (sub_idx -1: a leaf or a
     * subtree 255 and more deep), tested against a program's own byte sets
     * (cons_dfa.cats) the way sub_cat is against the fixed categories */
    int32_t *sub_idx;
    uint64_t (*sub_set)[4];
};

struct cons_matcher {
    cons_program *p;
    const cons_vocab *v;
    char *prefix;
    size_t n_prefix, pre_pos;
    int32_t state; /* DFA state */
    earley *e;
    size_t pos;
    bool done;
};

const char *cons_kind_name(cons_kind k) {
    switch (k) {
    case CONS_REGEX: return "regex";
    case CONS_JSON_SCHEMA: return "json_schema";
    case CONS_CHOICES: return "choices";
    case CONS_GRAMMAR: return "grammar";
    }
    return "?";
}

cons_options cons_options_default(void) {
    return (cons_options){.max_states = 20000, .ws_flexible = false, .ws_max = 4};
}

/* ---- compiling -------------------------------------------------------------- */

static int build_choices(cons_grammar *g, const char *text, size_t len, cons_diag *diag) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, false);
    int rc = -1;
    if (!j) {
        cons_diag_set(diag, end ? (int32_t)(end - text) : -1, "choices: invalid JSON");
        return -1;
    }
    if (!cJSON_IsArray(j)) {
        cons_diag_set(diag, -1, "choices must be a JSON array of strings");
        goto out;
    }
    int32_t n = cJSON_GetArraySize(j);
    if (n == 0) {
        cons_diag_set(diag, -1, "choices: the list is empty");
        goto out;
    }
    cn **alts = malloc(sizeof *alts * (size_t)n);
    if (!alts) goto oom;
    int32_t i = 0;
    for (cJSON *c = j->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c)) {
            free(alts);
            cons_diag_set(diag, -1, "choices: element %d is not a string", i);
            snprintf(diag->pointer, sizeof diag->pointer, "/%d", i);
            goto out;
        }
        alts[i] = cn_str(g, c->valuestring);
    }
    int32_t r = cg_rule_add(g, NULL, 0, -1);
    cn *body = cn_alt(g, alts, n);
    if (r >= 0) g->rules[r].body = body;
    free(alts);
    if (r < 0 || !body) goto oom;
    g->start = r;
    rc = 0;
    goto out;
oom:
    cons_diag_set(diag, -1, "out of memory");
out:
    cJSON_Delete(j);
    return rc;
}

cons_program *cons_compile(cons_kind kind, const char *text, size_t len, const cons_options *opt,
                           cons_diag *diag) {
    cons_diag dummy;
    if (!diag) diag = &dummy;
    cons_diag_set(diag, -1, "%s", "");
    cons_options o = opt ? *opt : cons_options_default();
    if (o.max_states <= 0) o.max_states = 20000;
    if (o.ws_max < 0) o.ws_max = 0;
    cons_grammar g = {0};
    cons_program *p = NULL;
    int rc = -1;
    if (!text && len) {
        cons_diag_set(diag, -1, "no constraint text");
        return NULL;
    }
    switch (kind) {
    case CONS_REGEX: {
        int32_t r = cg_rule_add(&g, NULL, 0, -1);
        if (r < 0) {
            cons_diag_set(diag, -1, "out of memory");
            break;
        }
        cn *body = cons_regex_parse(&g, text ? text : "", len, false, diag);
        g.rules[r].body = body;
        g.start = r;
        rc = body ? 0 : -1;
        break;
    }
    case CONS_CHOICES: rc = build_choices(&g, text, len, diag); break;
    case CONS_GRAMMAR:
        rc = cons_gbnf_parse(&g, text, len, diag);
        if (rc) cons_diag_locate(diag, text, len);
        break;
    case CONS_JSON_SCHEMA: rc = cons_schema_build(&g, text, len, &o, diag); break;
    default: cons_diag_set(diag, -1, "unknown constraint kind %d", (int)kind); break;
    }
    if (rc == 0) {
        cons_dfa *d = NULL;
        cons_nfa *n = NULL;
        if (cons_build(&g, &o, &d, &n, diag) == 0) {
            p = calloc(1, sizeof *p);
            if (!p) {
                cons_dfa_free(d);
                cons_nfa_free(n);
                cons_diag_set(diag, -1, "out of memory");
            } else {
                atomic_init(&p->refs, 1);
                p->kind = kind;
                p->dfa = d;
                p->nfa = n;
                pthread_mutex_init(&p->mu, NULL);
            }
        } else if (kind == CONS_GRAMMAR) {
            cons_diag_locate(diag, text, len);
        }
    }
    cg_free(&g);
    return p;
}

cons_program *cons_program_retain(cons_program *p) {
    if (p) atomic_fetch_add(&p->refs, 1);
    return p;
}

void cons_program_release(cons_program *p) {
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1) return;
    for (mask_cache *c = p->caches, *nx; c; c = nx) {
        nx = c->next;
        mask_cache_free(c);
    }
    for (int32_t b = 0; b < p->emask_cap; b++)
        for (emask *x = p->emasks[b], *nx; x; x = nx) {
            nx = x->next;
            free(x->key);
            free(x->mask);
            free(x);
        }
    free(p->emasks);
    pthread_mutex_destroy(&p->mu);
    cons_dfa_free(p->dfa);
    cons_nfa_free(p->nfa);
    free(p);
}

cons_kind cons_program_kind(const cons_program *p) { return p->kind; }

bool cons_program_is_dfa(const cons_program *p) { return p && p->dfa; }

int32_t cons_program_states(const cons_program *p) {
    return !p ? 0 : p->dfa ? dfa_n_states(p->dfa) : p->nfa->n_states;
}

int cons_program_match(const cons_program *p, const char *bytes, size_t n) {
    if (p->dfa) {
        const cons_dfa *d = p->dfa;
        int32_t s = 0;
        for (size_t i = 0; i < n && s >= 0; i++) s = dfa_next(d, s, d->cls[(uint8_t)bytes[i]]);
        return s >= 0 && d->accept[s];
    }
    earley *e = earley_new(p->nfa);
    if (!e) return 0;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) ok = earley_push(e, (uint8_t)bytes[i]) == 1;
    ok = ok && earley_accepting(e);
    earley_free(e);
    return ok;
}

/* ---- compile cache ------------------------------------------------------------ */

#define CACHE_BUCKETS 256

typedef struct centry {
    uint64_t hash;
    cons_kind kind;
    cons_options opt;
    char *text;
    size_t len;
    cons_program *p;
    struct centry *next;
} centry;

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static centry *cache_tab[CACHE_BUCKETS];

static uint64_t text_hash(cons_kind k, const cons_options *o, const char *t, size_t n) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)k;
    h = (h ^ (uint64_t)o->max_states) * 1099511628211ull;
    h = (h ^ (uint64_t)o->ws_flexible) * 1099511628211ull;
    h = (h ^ (uint64_t)o->ws_max) * 1099511628211ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)t[i]) * 1099511628211ull;
    return h;
}

cons_program *cons_compile_cached(cons_kind kind, const char *text, size_t len,
                                  const cons_options *opt, cons_diag *diag) {
    cons_options o = opt ? *opt : cons_options_default();
    uint64_t h = text_hash(kind, &o, text ? text : "", len);
    centry **bucket = &cache_tab[h % CACHE_BUCKETS];
    pthread_mutex_lock(&cache_mu);
    for (centry *c = *bucket; c; c = c->next)
        if (c->hash == h && c->kind == kind && c->len == len && c->opt.max_states == o.max_states &&
            c->opt.ws_flexible == o.ws_flexible && c->opt.ws_max == o.ws_max &&
            memcmp(c->text, text, len) == 0) {
            cons_program *p = cons_program_retain(c->p);
            pthread_mutex_unlock(&cache_mu);
            if (diag) cons_diag_set(diag, -1, "%s", "");
            return p;
        }
    pthread_mutex_unlock(&cache_mu);
    cons_program *p = cons_compile(kind, text, len, &o, diag);
    if (!p) return NULL;
    centry *c = calloc(1, sizeof *c);
    char *t = malloc(len + 1);
    if (!c || !t) {
        free(c);
        free(t);
        return p; /* works, just not cached */
    }
    if (len) memcpy(t, text, len);
    t[len] = 0;
    *c = (centry){.hash = h, .kind = kind, .opt = o, .text = t, .len = len, .p = cons_program_retain(p)};
    pthread_mutex_lock(&cache_mu);
    /* another thread may have compiled the same text meanwhile: keep the first */
    for (centry *o2 = *bucket; o2; o2 = o2->next)
        if (o2->hash == h && o2->kind == kind && o2->len == len && memcmp(o2->text, text, len) == 0 &&
            memcmp(&o2->opt, &o, sizeof o) == 0) {
            cons_program *q = cons_program_retain(o2->p);
            pthread_mutex_unlock(&cache_mu);
            cons_program_release(c->p);
            cons_program_release(p);
            free(c->text);
            free(c);
            return q;
        }
    c->next = *bucket;
    *bucket = c;
    pthread_mutex_unlock(&cache_mu);
    return p;
}

void cons_cache_clear(void) {
    pthread_mutex_lock(&cache_mu);
    for (int b = 0; b < CACHE_BUCKETS; b++) {
        for (centry *c = cache_tab[b], *nx; c; c = nx) {
            nx = c->next;
            cons_program_release(c->p);
            free(c->text);
            free(c);
        }
        cache_tab[b] = NULL;
    }
    pthread_mutex_unlock(&cache_mu);
}

/* ---- vocabulary ------------------------------------------------------------------ */

static atomic_uint_fast64_t vocab_serial = 1;

typedef struct tok_ref {
    const uint8_t *b;
    size_t n;
    int32_t id;
} tok_ref;

static int cmp_tok(const void *x, const void *y) {
    const tok_ref *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->b, b->b, n);
    if (c) return c;
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Byte categories a trie subtree may be made of, widest first: plain
 * (printable ASCII but '"' and '\\': a JSON string's interior), word
 * characters, lower-case letters and digits. */
#define N_CATS 3
static bool cat_byte(int c, uint8_t b) {
    switch (c) {
    case 0: return b >= 0x20 && b < 0x7F && b != '"' && b != '\\';
    case 1: return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '_';
    default: return (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9');
    }
}

/* Bit UTF8_CAT of sub_cat: below the node, every token goes on with whole,
 * validly encoded characters, each a plain byte (category 0) or one at
 * U+0080 and above: text a JSON string holds as it is (accents, CJK,
 * emoji), which byte categories cannot describe. */
#define UTF8_CAT N_CATS

static bool utf8_char_ok(const cons_vocab *v, const uint8_t *vb, int32_t c);

/* Node p ends a character missing `need` bytes, the next one in lo..hi. */
static bool utf8_cont_ok(const cons_vocab *v, const uint8_t *vb, int32_t p, int need, uint8_t lo, uint8_t hi) {
    if (v->node[p].ntok) return false; /* a token ends inside the character */
    for (int32_t c = p + 1; c < v->node[p].skip; c = v->node[c].skip) {
        uint8_t b = v->node[c].byte;
        if (b < lo || b > hi) return false;
        if (need == 1 ? !vb[c] : !utf8_cont_ok(v, vb, c, need - 1, 0x80, 0xBF)) return false;
    }
    return true;
}

/* Node c holds the first byte of a character: the character is whole and
 * valid on every path, and text as above follows (vb: per node, whether
 * its subtree below is such text). */
static bool utf8_char_ok(const cons_vocab *v, const uint8_t *vb, int32_t c) {
    uint8_t b = v->node[c].byte;
    if (b < 0x80) return cat_byte(0, b) && vb[c];
    if (b >= 0xC2 && b <= 0xDF) return utf8_cont_ok(v, vb, c, 1, 0x80, 0xBF);
    if (b == 0xE0) return utf8_cont_ok(v, vb, c, 2, 0xA0, 0xBF);
    if (b == 0xED) return utf8_cont_ok(v, vb, c, 2, 0x80, 0x9F);
    if (b >= 0xE1 && b <= 0xEF) return utf8_cont_ok(v, vb, c, 2, 0x80, 0xBF);
    if (b == 0xF0) return utf8_cont_ok(v, vb, c, 3, 0x90, 0xBF);
    if (b >= 0xF1 && b <= 0xF3) return utf8_cont_ok(v, vb, c, 3, 0x80, 0xBF);
    if (b == 0xF4) return utf8_cont_ok(v, vb, c, 3, 0x80, 0x8F);
    return false;
}

/* Fills ptok, ptok_lo, sub_h and sub_cat (see struct cons_vocab). Returns 0 or -1. */
static int plain_summaries(cons_vocab *v) {
    int32_t N = v->n_nodes;
    int32_t *h = malloc(sizeof *h * ((size_t)N + 1));
    v->ptok_lo = malloc(sizeof *v->ptok_lo * ((size_t)N + 1));
    v->sub_h = calloc((size_t)N + 1, 1);
    v->sub_cat = calloc((size_t)N + 1, 1);
    v->sub_idx = malloc(sizeof *v->sub_idx * ((size_t)N + 1));
    int32_t total = 0, inner = 0;
    for (int32_t i = 0; i < N; i++) {
        total += v->node[i].ntok;
        inner += v->node[i].skip > i + 1;
    }
    v->ptok = malloc(sizeof *v->ptok * ((size_t)total + 1));
    v->sub_set = malloc(sizeof *v->sub_set * ((size_t)inner + 1));
    if (!h || !v->ptok_lo || !v->sub_h || !v->sub_cat || !v->ptok || !v->sub_idx || !v->sub_set) {
        free(h);
        return -1;
    }
    int32_t k = 0;
    for (int32_t i = 0; i < N; i++) {
        v->ptok_lo[i] = k;
        for (int32_t j = 0; j < v->node[i].ntok; j++) v->ptok[k++] = v->toks[v->node[i].tok + j];
    }
    v->ptok_lo[N] = k;
    /* h[i]: height below i (children come after i) */
    uint8_t catof[256];
    for (int b = 0; b < 256; b++) {
        catof[b] = 0;
        for (int c = 0; c < N_CATS; c++) catof[b] |= (uint8_t)(cat_byte(c, (uint8_t)b) << c);
    }
    int32_t n_set = 0;
    for (int32_t i = N - 1; i >= 0; i--) {
        int32_t hi = 0;
        uint8_t cat = (1u << N_CATS) - 1;
        uint64_t below[4] = {0};
        v->sub_idx[i] = -1;
        for (int32_t c = i + 1; c < v->node[i].skip; c = v->node[c].skip) {
            cat &= catof[v->node[c].byte] & v->sub_cat[c];
            if (h[c] + 1 > hi) hi = h[c] + 1;
            below[v->node[c].byte >> 6] |= 1ull << (v->node[c].byte & 63);
            if (v->sub_idx[c] >= 0)
                for (int w = 0; w < 4; w++) below[w] |= v->sub_set[v->sub_idx[c]][w];
        }
        if (hi > 0) {
            v->sub_idx[i] = n_set;
            memcpy(v->sub_set[n_set++], below, sizeof below);
        }
        h[i] = hi;
        v->sub_h[i] = (uint8_t)(hi < 255 ? hi : 0);
        v->sub_cat[i] = v->sub_h[i] ? cat : (uint8_t)(hi ? 0 : (1u << N_CATS) - 1);
    }
    /* whole UTF-8 text below (children first: reverse preorder) */
    uint8_t *vb = malloc((size_t)N + 1);
    if (!vb) {
        free(h);
        return -1;
    }
    for (int32_t i = N - 1; i >= 0; i--) {
        vb[i] = 1;
        for (int32_t c = i + 1; c < v->node[i].skip && vb[i]; c = v->node[c].skip) vb[i] = utf8_char_ok(v, vb, c);
        if (vb[i] && v->sub_h[i]) v->sub_cat[i] |= 1u << UTF8_CAT;
    }
    free(vb);
    for (int32_t i = 0; i < N; i++)
        if (!v->sub_h[i]) {
            v->sub_cat[i] = 0;
            v->sub_idx[i] = -1;
        }
    free(h);
    return 0;
}

cons_vocab *cons_vocab_new(int32_t n_vocab, const char *const *pieces, const size_t *lens,
                           const bool *is_special, const int32_t *eos_ids, int32_t n_eos,
                           sgl_error *err) {
    if (n_vocab < 0 || n_eos < 0) {
        sgl_error_set(err, "cons_vocab_new: negative size");
        return NULL;
    }
    cons_vocab *v = calloc(1, sizeof *v);
    tok_ref *refs = NULL;
    int32_t *pstack = NULL;
    if (!v) goto oom;
    v->serial = atomic_fetch_add(&vocab_serial, 1);
    v->n_vocab = n_vocab;
    v->special = calloc((size_t)n_vocab + 1, 1);
    v->eos = malloc(sizeof *v->eos * ((size_t)n_eos + 1));
    v->off = malloc(sizeof *v->off * ((size_t)n_vocab + 1));
    v->len = malloc(sizeof *v->len * ((size_t)n_vocab + 1));
    if (!v->special || !v->eos || !v->off || !v->len) goto oom;
    size_t total = 0;
    for (int32_t i = 0; i < n_vocab; i++) total += pieces[i] ? lens[i] : 0;
    v->blob = malloc(total + 1);
    if (!v->blob) goto oom;
    total = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        v->off[i] = total;
        v->len[i] = pieces[i] ? lens[i] : 0;
        if (v->len[i]) memcpy(v->blob + total, pieces[i], v->len[i]);
        total += v->len[i];
        v->special[i] = is_special && is_special[i];
    }
    for (int32_t i = 0; i < n_eos; i++) {
        if (eos_ids[i] < 0 || eos_ids[i] >= n_vocab) {
            sgl_error_set(err, "cons_vocab_new: EOS id %d out of range", eos_ids[i]);
            cons_vocab_free(v);
            return NULL;
        }
        v->eos[i] = eos_ids[i];
        v->special[eos_ids[i]] = 1; /* EOS is never text */
    }
    v->n_eos = n_eos;
    /* the trie of every text token */
    refs = malloc(sizeof *refs * ((size_t)n_vocab + 1));
    if (!refs) goto oom;
    int32_t nt = 0;
    size_t nodes_max = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (v->special[i] || v->len[i] == 0 || v->len[i] > MAX_TOKEN_BYTES) continue;
        refs[nt++] = (tok_ref){(const uint8_t *)v->blob + v->off[i], v->len[i], i};
        nodes_max += v->len[i];
    }
    qsort(refs, (size_t)nt, sizeof *refs, cmp_tok);
    v->node = calloc(nodes_max + 1, sizeof *v->node);
    v->toks = malloc(sizeof *v->toks * ((size_t)nt + 1));
    pstack = malloc(sizeof *pstack * (MAX_TOKEN_BYTES + 1));
    if (!v->node || !v->toks || !pstack)
        goto oom;
    int32_t depth = 0, nn = 0;
    const uint8_t *prev = NULL;
    for (int32_t t = 0; t < nt; t++) {
        const tok_ref *r = &refs[t];
        int32_t common = 0;
        if (prev)
            while (common < depth && (size_t)common < r->n && prev[common] == r->b[common]) common++;
        while (depth > common) v->node[pstack[--depth]].skip = nn;
        while ((size_t)depth < r->n) {
            v->node[nn].byte = r->b[depth];
            v->node[nn].depth = (uint16_t)(depth + 1);
            v->node[nn].ntok = 0;
            pstack[depth++] = nn++;
        }
        struct tnode *nd = &v->node[pstack[depth - 1]];
        if (nd->ntok == 0) nd->tok = t;
        if (nd->ntok < 255) nd->ntok++; /* more same-byte tokens than that: never text */
        v->toks[t] = r->id;
        if (depth > v->max_depth) v->max_depth = depth;
        prev = r->b;
    }
    while (depth > 0) v->node[pstack[--depth]].skip = nn;
    v->n_nodes = nn;
    v->long_toks = malloc(sizeof *v->long_toks * ((size_t)nt + 1));
    if (!v->long_toks) goto oom;
    for (int32_t t = 0; t < nt; t++)
        if (refs[t].n > CLASS_DEPTH) v->long_toks[v->n_long++] = refs[t].id;
    if (plain_summaries(v)) goto oom;
    free(refs);
    free(pstack);
    return v;
oom:
    free(refs);
    free(pstack);
    cons_vocab_free(v);
    sgl_error_set(err, "cons_vocab_new: out of memory");
    return NULL;
}

void cons_vocab_free(cons_vocab *v) {
    if (!v) return;
    free(v->special);
    free(v->eos);
    free(v->blob);
    free(v->off);
    free(v->len);
    free(v->node);
    free(v->toks);
    free(v->long_toks);
    free(v->ptok);
    free(v->ptok_lo);
    free(v->sub_h);
    free(v->sub_cat);
    free(v->sub_idx);
    free(v->sub_set);
    free(v);
}

int32_t cons_vocab_size(const cons_vocab *v) { return v->n_vocab; }
size_t cons_mask_words(const cons_vocab *v) { return ((size_t)v->n_vocab + 31) / 32; }

/* ---- mask walks ------------------------------------------------------------------- */

static inline int32_t set_node_tokens(const cons_vocab *v, int32_t i, uint32_t *mask) {
    int32_t c = v->node[i].ntok;
    for (int32_t k = 0; k < c; k++) {
        int32_t t = v->toks[v->node[i].tok + k];
        mask[t >> 5] |= 1u << (t & 31);
    }
    return c;
}

/* Sets every token of node i's subtree (i included). Returns how many. */
static int32_t set_subtree_tokens(const cons_vocab *v, int32_t i, uint32_t *mask) {
    int32_t a = v->ptok_lo[i], z = v->ptok_lo[v->node[i].skip];
    for (int32_t k = a; k < z; k++) {
        int32_t tk = v->ptok[k];
        mask[tk >> 5] |= 1u << (tk & 31);
    }
    return z - a;
}

/* Which DFA states accept every string of one byte category (cat_byte) up
 * to a length, remembered for one walk in a small hash table of the states
 * the walk asks about (a walk sees a few of a DFA's states, so nothing is
 * sized by the DFA): per state and category, ok = a length known to pass,
 * bad = one known to fail (0: none known). */
#define MAX_CATS (N_CATS + 1 + CONS_DFA_CATS) /* fixed, UTF-8 text, the program's sets */
typedef struct pm_tab {
    int32_t *key; /* state, or -1 */
    uint8_t (*val)[2 * MAX_CATS];
    int32_t cap, n;
} pm_tab;

static int pm_tab_init(pm_tab *t, int32_t cap) {
    t->key = malloc(sizeof *t->key * (size_t)cap);
    t->val = malloc(sizeof *t->val * (size_t)cap);
    if (!t->key || !t->val) {
        free(t->key);
        free(t->val);
        return -1;
    }
    memset(t->key, 0xff, sizeof *t->key * (size_t)cap);
    t->cap = cap;
    t->n = 0;
    return 0;
}

/* The entry of state s (added zeroed), or NULL when memory runs out. */
static uint8_t *pm_slot(pm_tab *t, int32_t s) {
    uint32_t h = ((uint32_t)s * 2654435761u) & (uint32_t)(t->cap - 1);
    for (; t->key[h] >= 0; h = (h + 1) & (uint32_t)(t->cap - 1))
        if (t->key[h] == s) return t->val[h];
    if ((t->n + 1) * 2 > t->cap) {
        pm_tab g;
        if (pm_tab_init(&g, t->cap * 2)) return NULL;
        for (int32_t i = 0; i < t->cap; i++) {
            if (t->key[i] < 0) continue;
            uint32_t k = ((uint32_t)t->key[i] * 2654435761u) & (uint32_t)(g.cap - 1);
            while (g.key[k] >= 0) k = (k + 1) & (uint32_t)(g.cap - 1);
            g.key[k] = t->key[i];
            memcpy(g.val[k], t->val[i], sizeof g.val[k]);
        }
        g.n = t->n;
        free(t->key);
        free(t->val);
        *t = g;
        return pm_slot(t, s);
    }
    t->key[h] = s;
    memset(t->val[h], 0, sizeof t->val[h]);
    t->n++;
    return t->val[h];
}

typedef struct plain_memo {
    const cons_dfa *d;
    pm_tab *tab;
    int32_t cat;       /* category: ok at val[cat], bad at val[MAX_CATS + cat] */
    int32_t n_pcls;
    int32_t pcls[256]; /* the byte classes of the category's bytes */
} plain_memo;

/* True when every string of the category of at most h bytes keeps state s
 * alive (every DFA state can reach acceptance, so alive is enough). */
static bool plain_alive(plain_memo *pm, int32_t s, int32_t h) {
    uint8_t *e = pm_slot(pm->tab, s);
    if (!e) return false;
    if (h <= e[pm->cat]) return true;
    if (e[MAX_CATS + pm->cat] && h >= e[MAX_CATS + pm->cat]) return false;
    int32_t seen[8], ns = 0;
    for (int32_t k = 0; k < pm->n_pcls; k++) {
        int32_t t = dfa_next(pm->d, s, pm->pcls[k]);
        bool dup = false;
        for (int32_t j = 0; j < ns && !dup; j++) dup = seen[j] == t;
        if (dup) continue;
        if (ns < 8) seen[ns++] = t;
        if (t < 0 || !plain_alive(pm, t, h - 1)) {
            if ((e = pm_slot(pm->tab, s))) e[MAX_CATS + pm->cat] = (uint8_t)(t < 0 ? 1 : h);
            return false;
        }
    }
    if ((e = pm_slot(pm->tab, s))) e[pm->cat] = (uint8_t)h; /* the table may have moved */
    return true;
}

/* As plain_alive for UTF-8 text (UTF8_CAT): every string of at most h
 * bytes made of whole, valid characters (plain bytes, or U+0080 and above)
 * keeps state s alive. pm: category 0's memo (its byte classes are the
 * plain ones); results are kept under slot UTF8_CAT. */
static bool utf8_alive(plain_memo *pm, int32_t s, int32_t h);

/* The bytes of a character after its first, `need` of them, the next in
 * lo..hi, from state s; then utf8_alive with h. */
static bool utf8_rest_alive(plain_memo *pm, int32_t s, int need, uint8_t lo, uint8_t hi, int32_t h) {
    const cons_dfa *d = pm->d;
    int32_t last_cls = -1;
    for (int b = lo; b <= hi; b++) {
        if (d->cls[b] == last_cls) continue;
        last_cls = d->cls[b];
        int32_t t = dfa_next(d, s, d->cls[b]);
        if (t < 0) return false;
        if (need == 1 ? !utf8_alive(pm, t, h) : !utf8_rest_alive(pm, t, need - 1, 0x80, 0xBF, h)) return false;
    }
    return true;
}

static bool utf8_alive(plain_memo *pm, int32_t s, int32_t h) {
    if (h <= 0) return true;
    uint8_t *e = pm_slot(pm->tab, s);
    if (!e) return false;
    if (h <= e[UTF8_CAT]) return true;
    if (e[MAX_CATS + UTF8_CAT] && h >= e[MAX_CATS + UTF8_CAT]) return false;
    static const struct { uint8_t lo, hi, need, lo2, hi2; } lead[] = {
        {0xC2, 0xDF, 1, 0x80, 0xBF}, {0xE0, 0xE0, 2, 0xA0, 0xBF}, {0xE1, 0xEC, 2, 0x80, 0xBF},
        {0xED, 0xED, 2, 0x80, 0x9F}, {0xEE, 0xEF, 2, 0x80, 0xBF}, {0xF0, 0xF0, 3, 0x90, 0xBF},
        {0xF1, 0xF3, 3, 0x80, 0xBF}, {0xF4, 0xF4, 3, 0x80, 0x8F}};
    bool ok = plain_alive(pm, s, 1); /* one plain byte: then recurse below */
    for (int32_t k = 0; ok && k < pm->n_pcls; k++) {
        int32_t t = dfa_next(pm->d, s, pm->pcls[k]);
        ok = t >= 0 && utf8_alive(pm, t, h - 1);
    }
    for (size_t g = 0; ok && g < sizeof lead / sizeof lead[0]; g++) {
        if (lead[g].need + 1 > h) continue; /* longer than any token here */
        int32_t last_cls = -1;
        for (int b = lead[g].lo; ok && b <= lead[g].hi; b++) {
            if (pm->d->cls[b] == last_cls) continue;
            last_cls = pm->d->cls[b];
            int32_t t = dfa_next(pm->d, s, pm->d->cls[b]);
            ok = t >= 0 && utf8_rest_alive(pm, t, lead[g].need, lead[g].lo2, lead[g].hi2, h - 1 - lead[g].need);
        }
    }
    if ((e = pm_slot(pm->tab, s))) { /* the table may have moved */
        if (ok) e[UTF8_CAT] = (uint8_t)h;
        else e[MAX_CATS + UTF8_CAT] = (uint8_t)h;
    }
    return ok;
}

/* Walks nodes [lo, hi) (a subtree's descendants, at depth base+1 ...) from
 * DFA state s; p NULL: everything is allowed. A node whose subtree below is
 * plain and whose state keeps every plain string of that height alive gets
 * its whole subtree at once. Returns the tokens set, or -1. */
static int32_t walk_dfa(const cons_vocab *v, const cons_dfa *d, int32_t lo, int32_t hi, int32_t base,
                        int32_t s, uint32_t *mask) {
    int32_t count = 0;
    if (!d) {
        for (int32_t i = lo; i < hi; i++) count += set_node_tokens(v, i, mask);
        return count;
    }
    int32_t stack_buf[256];
    int32_t *st = v->max_depth < 255 ? stack_buf : malloc(sizeof *st * ((size_t)v->max_depth + 2));
    plain_memo pm[MAX_CATS];
    pm_tab tab;
    if (!st || pm_tab_init(&tab, 256)) {
        if (st != stack_buf) free(st);
        return -1;
    }
    /* the fixed categories, then (after UTF8_CAT's slot) the program's own
     * large byte sets */
    int32_t n_cats = N_CATS + 1 + d->n_cats;
    for (int c = 0; c < n_cats; c++) {
        pm[c] = (plain_memo){.d = d, .tab = &tab, .cat = c};
        if (c == UTF8_CAT) continue;
        uint8_t in[256] = {0};
        for (int b = 0; b < 256; b++)
            if ((c < N_CATS ? cat_byte(c, (uint8_t)b) : (d->cats[c - N_CATS - 1][b >> 6] >> (b & 63)) & 1) &&
                !in[d->cls[b]]) {
                in[d->cls[b]] = 1;
                pm[c].pcls[pm[c].n_pcls++] = d->cls[b];
            }
    }
    st[0] = s;
    const uint8_t *cls = d->cls;
    const struct tnode *node = v->node;
    const uint8_t *sub_h = v->sub_h, *sub_cat = v->sub_cat;
    for (int32_t i = lo; i < hi;) {
        const struct tnode *nd = &node[i];
        int32_t dep = nd->depth - base;
        int32_t t = dfa_next(d, st[dep - 1], cls[nd->byte]);
        if (t < 0) {
            i = nd->skip;
            continue;
        }
        if (sub_h[i]) {
            bool all = false;
            for (int c = 0; c < N_CATS && !all; c++)
                all = ((sub_cat[i] >> c) & 1) && plain_alive(&pm[c], t, sub_h[i]);
            if (!all && ((sub_cat[i] >> UTF8_CAT) & 1)) all = utf8_alive(&pm[0], t, sub_h[i]);
            /* (the program's sets cost two more loads from memory: only for
             * subtrees worth skipping) */
            if (!all && n_cats > N_CATS + 1 && nd->skip - i > 8) {
                const uint64_t *below = v->sub_set[v->sub_idx[i]];
                for (int c = N_CATS + 1; c < n_cats && !all; c++) {
                    const uint64_t *cs = d->cats[c - N_CATS - 1];
                    all = !(below[0] & ~cs[0]) && !(below[1] & ~cs[1]) && !(below[2] & ~cs[2]) &&
                          !(below[3] & ~cs[3]) && plain_alive(&pm[c], t, sub_h[i]);
                }
            }
            if (all) {
                count += set_subtree_tokens(v, i, mask);
                i = nd->skip;
                continue;
            }
        }
        st[dep] = t;
        if (nd->ntok) {
            int32_t tk = v->toks[nd->tok];
            mask[tk >> 5] |= 1u << (tk & 31);
            count++;
            if (nd->ntok > 1) count += set_node_tokens(v, i, mask) - 1;
        }
        i++;
    }
    if (st != stack_buf) free(st);
    free(tab.key);
    free(tab.val);
    return count;
}

static int32_t walk_earley(const cons_vocab *v, earley *e, int32_t lo, int32_t hi, int32_t base,
                           uint32_t *mask) {
    int32_t count = 0, e0 = earley_depth(e);
    bool memo = earley_walk_begin(e) == 0;
    uint32_t cats[N_CATS][8] = {{0}};
    for (int c = 0; c < N_CATS; c++)
        for (int b = 0; b < 256; b++)
            if (cat_byte(c, (uint8_t)b)) cats[c][b >> 5] |= 1u << (b & 31);
    for (int32_t i = lo; i < hi;) {
        int32_t dep = v->node[i].depth - base;
        while (earley_depth(e) > e0 + dep - 1) earley_pop(e);
        int r = memo ? earley_walk_push(e, v->node[i].byte) : earley_push(e, v->node[i].byte);
        if (r < 0) {
            count = -1;
            break;
        }
        if (r == 0) {
            i = v->node[i].skip;
            continue;
        }
        if (memo && v->sub_cat[i]) {
            bool all = false;
            for (int c = 0; c < N_CATS && !all; c++)
                all = ((v->sub_cat[i] >> c) & 1) &&
                      earley_walk_loops(e, c, cats[c], (v->node[i].skip - i) / 4) == 1;
            if (all) {
                count += set_subtree_tokens(v, i, mask);
                i = v->node[i].skip;
                continue;
            }
        }
        if (v->node[i].ntok) count += set_node_tokens(v, i, mask);
        i++;
    }
    while (earley_depth(e) > e0) earley_pop(e);
    if (memo) earley_walk_end(e);
    return count;
}

/* ---- matcher --------------------------------------------------------------------------- */

cons_matcher *cons_matcher_new(cons_program *p, const cons_vocab *v, const char *prefix,
                               size_t n_prefix, sgl_error *err) {
    cons_matcher *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->v = v;
    if (n_prefix) {
        m->prefix = malloc(n_prefix);
        if (!m->prefix) goto oom;
        memcpy(m->prefix, prefix, n_prefix);
        m->n_prefix = n_prefix;
    }
    if (p && p->nfa) {
        m->e = earley_new(p->nfa);
        if (!m->e) goto oom;
    }
    m->p = cons_program_retain(p);
    return m;
oom:
    if (m) free(m->prefix);
    free(m);
    sgl_error_set(err, "constraint matcher: out of memory");
    return NULL;
}

void cons_matcher_free(cons_matcher *m) {
    if (!m) return;
    cons_program_release(m->p);
    earley_free(m->e);
    free(m->prefix);
    free(m);
}

cons_matcher *cons_matcher_clone(const cons_matcher *m, sgl_error *err) {
    cons_matcher *c = malloc(sizeof *c);
    if (!c) goto oom;
    *c = *m;
    c->prefix = NULL;
    c->e = NULL;
    if (m->n_prefix) {
        c->prefix = malloc(m->n_prefix);
        if (!c->prefix) goto oom;
        memcpy(c->prefix, m->prefix, m->n_prefix);
    }
    if (m->e && !(c->e = earley_clone(m->e))) goto oom;
    cons_program_retain(c->p);
    return c;
oom:
    if (c) free(c->prefix);
    free(c);
    sgl_error_set(err, "constraint matcher: out of memory");
    return NULL;
}

static bool in_prefix(const cons_matcher *m) { return m->pre_pos < m->n_prefix; }

bool cons_matcher_accepting(const cons_matcher *m) {
    if (m->done || in_prefix(m)) return false;
    if (!m->p) return true;
    if (m->p->dfa) return m->p->dfa->accept[m->state];
    return earley_accepting(m->e);
}

bool cons_matcher_can_continue(const cons_matcher *m) {
    if (m->done) return false;
    if (in_prefix(m) || !m->p) return true;
    if (m->p->dfa) {
        const cons_dfa *d = m->p->dfa;
        for (int32_t c = 0; c < d->n_cls; c++)
            if (dfa_next(d, m->state, c) >= 0) return true;
        return false;
    }
    uint32_t nb[8];
    earley_next_bytes(m->e, nb);
    for (int w = 0; w < 8; w++)
        if (nb[w]) return true;
    return false;
}

size_t cons_matcher_position(const cons_matcher *m) { return m->pos; }

static void add_eos(const cons_matcher *m, uint32_t *mask, int32_t *count) {
    if (!cons_matcher_accepting(m)) return;
    for (int32_t i = 0; i < m->v->n_eos; i++) {
        int32_t t = m->v->eos[i];
        if (!(mask[t >> 5] & (1u << (t & 31)))) {
            mask[t >> 5] |= 1u << (t & 31);
            (*count)++;
        }
    }
}

/* Mask classes: two states get the same mask when no byte string of at most
 * `depth` bytes keeps one alive and kills the other (with depth the longest
 * token, or CLASS_DEPTH and longer tokens checked per state). That is Moore
 * refinement for depth rounds, where "dead" is its own class; a string of
 * maxLength 200 then needs a handful of walks, not 200. Classes are
 * hash-consed per round (round r: the tuple of round r-1's classes of the
 * state and of its successors), so a state's class is computed on demand
 * from the states within depth bytes of it, and equal classes are equal
 * numbers whatever the order states are asked in: the first mask of a large
 * DFA costs its neighbourhood, not the whole DFA. Under p->mu. */

static void mask_cache_free(mask_cache *c) {
    if (!c) return;
    for (int32_t i = 0; i < c->n_masks; i++) free(c->masks[i]);
    for (int32_t i = 0; i < c->n_smasks; i++) free(c->smasks[i]);
    free(c->smasks);
    free(c->scounts);
    if (c->rounds)
        for (int32_t r = 0; r < c->depth; r++) {
            free(c->rounds[r].data);
            free(c->rounds[r].off);
            free(c->rounds[r].tab);
        }
    free(c->rounds);
    if (c->memo)
        for (int32_t i = 0; i < c->depth * c->n_blk; i++) free(c->memo[i]);
    free(c->memo);
    free(c->masks);
    free(c->counts);
    free(c);
}

static uint64_t tup_hash(const int32_t *t, int32_t n) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint32_t)t[i]) * 1099511628211ull;
    return h ^ (h >> 31);
}

/* The index of tuple t[0..n) in round R (added when new), or -1 (memory). */
static int32_t round_intern(class_round *R, const int32_t *t, int32_t n) {
    if ((R->n + 1) * 2 > R->tab_cap) {
        int32_t cap = R->tab_cap ? R->tab_cap * 2 : 64;
        int32_t *tab = malloc(sizeof *tab * (size_t)cap);
        if (!tab) return -1;
        for (int32_t i = 0; i < cap; i++) tab[i] = -1;
        for (int32_t i = 0; i < R->n; i++) {
            uint32_t h = (uint32_t)tup_hash(R->data + R->off[i], (int32_t)(R->off[i + 1] - R->off[i])) &
                         (uint32_t)(cap - 1);
            while (tab[h] >= 0) h = (h + 1) & (uint32_t)(cap - 1);
            tab[h] = i;
        }
        free(R->tab);
        R->tab = tab;
        R->tab_cap = cap;
    }
    uint32_t h = (uint32_t)tup_hash(t, n) & (uint32_t)(R->tab_cap - 1);
    for (; R->tab[h] >= 0; h = (h + 1) & (uint32_t)(R->tab_cap - 1)) {
        int32_t i = R->tab[h];
        if (R->off[i + 1] - R->off[i] == n && memcmp(R->data + R->off[i], t, sizeof *t * (size_t)n) == 0)
            return i;
    }
    if (R->n + 2 > R->cap) {
        int32_t cap = R->cap ? R->cap * 2 : 64;
        int64_t *o = realloc(R->off, sizeof *o * (size_t)cap);
        if (!o) return -1;
        if (!R->off) o[0] = 0;
        R->off = o;
        R->cap = cap;
    }
    if (R->n_data + n > R->cap_data) {
        int64_t cap = R->cap_data ? R->cap_data * 2 : 1024;
        while (cap < R->n_data + n) cap *= 2;
        int32_t *v = realloc(R->data, sizeof *v * (size_t)cap);
        if (!v) return -1;
        R->data = v;
        R->cap_data = cap;
    }
    memcpy(R->data + R->n_data, t, sizeof *t * (size_t)n);
    R->n_data += n;
    R->off[R->n + 1] = R->n_data;
    R->tab[h] = R->n;
    return R->n++;
}

/* The class of state s after r rounds (0: every state alike), or -1 (memory).
 * Round r's tuple: the state's class at round r-1, then, for each class of
 * round r-1 its successors fall in (ascending), that class and the byte
 * classes leading there (a 256-bit set). Successors are grouped by state
 * first, so a state whose byte classes mostly share a successor (a string
 * interior) costs one recursive step, not one per byte class. */
static int32_t mask_class(mask_cache *c, const cons_dfa *d, int32_t r, int32_t s) {
    if (r == 0) return 0;
    int32_t **blk = &c->memo[(size_t)(r - 1) * c->n_blk + s / MEMO_BLK];
    if (!*blk && !(*blk = calloc(MEMO_BLK, sizeof **blk))) return -1;
    int32_t *m = &(*blk)[s % MEMO_BLK];
    if (*m > 0) return *m - 1;
    int32_t K = d->n_cls;
    int32_t tgt[256], gc[256], ng = 0;
    int16_t gof[256]; /* byte class -> group, -1 dead */
    for (int32_t k = 0; k < K; k++) {
        int32_t t = dfa_next(d, s, k), g = 0;
        gof[k] = -1;
        if (t < 0) continue;
        while (g < ng && tgt[g] != t) g++;
        if (g == ng) tgt[ng++] = t;
        gof[k] = (int16_t)g;
    }
    int32_t self = mask_class(c, d, r - 1, s);
    if (self < 0) return -1;
    for (int32_t g = 0; g < ng; g++)
        if ((gc[g] = mask_class(c, d, r - 1, tgt[g])) < 0) return -1;
    /* the tuple (built after the recursion, which keeps stack frames small):
     * successor classes ascending, each with the byte classes leading to it */
    int32_t tup[1 + 256 * 9], n = 0;
    tup[n++] = self;
    for (int32_t done = 0; done < ng;) {
        int32_t cl = INT32_MAX;
        for (int32_t g = 0; g < ng; g++)
            if (gc[g] >= 0 && gc[g] < cl) cl = gc[g];
        uint64_t bits[4] = {0};
        for (int32_t g = 0; g < ng; g++)
            if (gc[g] == cl) {
                for (int32_t k = 0; k < K; k++)
                    if (gof[k] == g) bits[k >> 6] |= 1ull << (k & 63);
                gc[g] = -1;
                done++;
            }
        tup[n++] = cl;
        for (int w = 0; w < 4; w++) {
            tup[n++] = (int32_t)(uint32_t)bits[w];
            tup[n++] = (int32_t)(uint32_t)(bits[w] >> 32);
        }
    }
    int32_t k = round_intern(&c->rounds[r - 1], tup, n);
    if (k >= 0) *m = k + 1;
    return k;
}

static mask_cache *mask_cache_new(const cons_program *p, const cons_vocab *v) {
    mask_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    int32_t N = p->dfa->cap_states;
    c->exact = !p->dfa->lz;
    c->depth = v->max_depth < CLASS_DEPTH ? v->max_depth : CLASS_DEPTH;
    c->n_blk = N / MEMO_BLK + 1;
    c->memo = calloc((size_t)c->n_blk * (size_t)c->depth + 1, sizeof *c->memo);
    c->rounds = calloc((size_t)c->depth + 1, sizeof *c->rounds);
    if (!c->memo || !c->rounds) {
        mask_cache_free(c);
        return NULL;
    }
    c->serial = v->serial;
    return c;
}

/* Keeps a copy of mask (cnt tokens) as (*masks)[k] unless one is there.
 * Under p->mu; on out of memory nothing is kept. */
static void keep_mask(uint32_t ***masks, int32_t **counts, int32_t *n, int32_t k, const uint32_t *mask,
                      int32_t cnt, size_t words) {
    if (k >= *n) {
        int32_t cap = *n ? *n : 16;
        while (cap <= k) cap *= 2;
        uint32_t **ms = realloc(*masks, sizeof *ms * (size_t)cap);
        if (!ms) return;
        *masks = ms;
        int32_t *cs = realloc(*counts, sizeof *cs * (size_t)cap);
        if (!cs) return;
        *counts = cs;
        for (int32_t i = *n; i < cap; i++) ms[i] = NULL;
        *n = cap;
    }
    if ((*masks)[k]) return;
    uint32_t *copy = malloc(words * 4);
    if (!copy) return;
    memcpy(copy, mask, words * 4);
    (*masks)[k] = copy;
    (*counts)[k] = cnt;
}

/* The mask of DFA state s, from the program's cache (computed on a miss). */
static int32_t dfa_mask(cons_program *p, const cons_vocab *v, int32_t s, uint32_t *mask) {
    size_t words = cons_mask_words(v);
    pthread_mutex_lock(&p->mu);
    mask_cache *c = p->caches;
    while (c && c->serial != v->serial) c = c->next;
    pthread_mutex_unlock(&p->mu);
    if (!c) {
        mask_cache *nc = mask_cache_new(p, v);
        pthread_mutex_lock(&p->mu);
        c = p->caches;
        while (c && c->serial != v->serial) c = c->next;
        if (!c && nc) {
            nc->next = p->caches;
            p->caches = c = nc;
            nc = NULL;
        }
        pthread_mutex_unlock(&p->mu);
        mask_cache_free(nc);
    }
    if (cons_dfa_failed(p->dfa)) return -1;
    pthread_mutex_lock(&p->mu);
    if (c && !c->exact && s < c->n_smasks && c->smasks[s]) {
        memcpy(mask, c->smasks[s], words * 4);
        int32_t n = c->scounts[s];
        pthread_mutex_unlock(&p->mu);
        return n;
    }
    int32_t k = !c ? -1 : c->exact ? s : c->walks >= CLASS_AFTER ? mask_class(c, p->dfa, c->depth, s) : -1;
    const uint32_t *hit = k >= 0 && k < c->n_masks ? c->masks[k] : NULL;
    int32_t cnt = hit ? c->counts[k] : 0;
    pthread_mutex_unlock(&p->mu);
    if (hit) {
        memcpy(mask, hit, words * 4);
        if (c->exact) return cnt;
        /* tokens longer than the class depth: as state s itself decides */
        const cons_dfa *d = p->dfa;
        for (int32_t i = 0; i < v->n_long; i++) {
            int32_t t = v->long_toks[i], st = s;
            const uint8_t *b = (const uint8_t *)v->blob + v->off[t];
            for (size_t k2 = 0; k2 < v->len[t] && st >= 0; k2++) st = dfa_next(d, st, d->cls[b[k2]]);
            uint32_t bit = 1u << (t & 31);
            bool was = mask[t >> 5] & bit;
            if (st >= 0 && !was) {
                mask[t >> 5] |= bit;
                cnt++;
            } else if (st < 0 && was) {
                mask[t >> 5] &= ~bit;
                cnt--;
            }
        }
        return cnt;
    }
    memset(mask, 0, words * 4);
    cnt = walk_dfa(v, p->dfa, 0, v->n_nodes, 0, s, mask);
    /* a lazy DFA that could not build a state (memory, budget) gives no mask */
    if (p->dfa->lz && cons_dfa_failed(p->dfa)) return -1;
    if (cnt < 0 || !c) return cnt;
    pthread_mutex_lock(&p->mu);
    if (k >= 0) keep_mask(&c->masks, &c->counts, &c->n_masks, k, mask, cnt, words);
    if (!c->exact) {
        keep_mask(&c->smasks, &c->scounts, &c->n_smasks, s, mask, cnt, words);
        c->walks++;
    }
    pthread_mutex_unlock(&p->mu);
    return cnt;
}

/* The recogniser's mask, from the program's cache keyed by earley_key. */
static int32_t earley_mask(cons_program *p, const cons_vocab *v, earley *e, uint32_t *mask) {
    size_t words = cons_mask_words(v);
    int32_t *key = NULL;
    size_t kn = 0;
    if (earley_key(e, &key, &kn)) return walk_earley(v, e, 0, v->n_nodes, 0, mask);
    uint64_t h = 1469598103934665603ull ^ v->serial;
    for (size_t i = 0; i < kn; i++) h = (h ^ (uint32_t)key[i]) * 1099511628211ull;
    pthread_mutex_lock(&p->mu);
    if (p->emask_cap) {
        for (emask *x = p->emasks[h & (uint64_t)(p->emask_cap - 1)]; x; x = x->next)
            if (x->hash == h && x->serial == v->serial && x->key_len == kn &&
                memcmp(x->key, key, kn * sizeof *key) == 0) {
                memcpy(mask, x->mask, words * 4);
                int32_t cnt = x->count;
                pthread_mutex_unlock(&p->mu);
                free(key);
                return cnt;
            }
    }
    pthread_mutex_unlock(&p->mu);
    int32_t cnt = walk_earley(v, e, 0, v->n_nodes, 0, mask);
    if (cnt < 0) {
        free(key);
        return cnt;
    }
    emask *x = malloc(sizeof *x);
    uint32_t *copy = malloc(words * 4);
    if (!x || !copy) {
        free(x);
        free(copy);
        free(key);
        return cnt;
    }
    memcpy(copy, mask, words * 4);
    *x = (emask){.serial = v->serial, .hash = h, .key = key, .key_len = kn, .mask = copy, .count = cnt};
    pthread_mutex_lock(&p->mu);
    if (!p->emask_cap) {
        p->emasks = calloc(1024, sizeof *p->emasks);
        if (p->emasks) p->emask_cap = 1024;
    }
    if (p->emask_cap && p->emask_n < EMASK_MAX) {
        emask **b = &p->emasks[h & (uint64_t)(p->emask_cap - 1)];
        x->next = *b;
        *b = x;
        p->emask_n++;
        x = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (x) {
        free(x->key);
        free(x->mask);
        free(x);
    }
    return cnt;
}

int32_t cons_matcher_mask(cons_matcher *m, uint32_t *mask) {
    const cons_vocab *v = m->v;
    size_t words = cons_mask_words(v);
    int32_t count = 0;
    if (m->done) {
        memset(mask, 0, words * 4);
        return 0;
    }
    if (!in_prefix(m) && m->p && m->p->dfa) {
        count = dfa_mask(m->p, v, m->state, mask);
        if (count < 0) return 0;
    } else {
        memset(mask, 0, words * 4);
        int32_t lo = 0, hi = v->n_nodes, base = 0;
        if (in_prefix(m)) {
            /* follow the remaining prefix down the trie: tokens on the way fit */
            const uint8_t *r = (const uint8_t *)m->prefix + m->pre_pos;
            size_t rn = m->n_prefix - m->pre_pos;
            for (size_t k = 0; k < rn; k++) {
                int32_t c = lo;
                while (c < hi && v->node[c].byte != r[k]) c = v->node[c].skip;
                if (c >= hi) {
                    lo = hi = 0;
                    break;
                }
                count += set_node_tokens(v, c, mask);
                lo = c + 1;
                hi = v->node[c].skip;
                base++;
            }
        }
        if (lo < hi) {
            int32_t c;
            if (!m->p)
                c = walk_dfa(v, NULL, lo, hi, base, 0, mask);
            else if (m->p->dfa)
                c = walk_dfa(v, m->p->dfa, lo, hi, base, in_prefix(m) ? 0 : m->state, mask);
            else if (!in_prefix(m))
                c = earley_mask(m->p, v, m->e, mask);
            else
                c = walk_earley(v, m->e, lo, hi, base, mask);
            if (c < 0) return 0;
            count += c;
        }
    }
    if (!in_prefix(m)) {
        /* cached masks hold no EOS */
        add_eos(m, mask, &count);
    }
    return count;
}

/* Runs bytes through the automaton part (no prefix). commit: keep the
 * result. Returns 1 alive, 0 dead (nothing changed), -1 out of memory. */
static int run_bytes(cons_matcher *m, const uint8_t *b, size_t n, bool commit) {
    if (!m->p) return 1;
    if (m->p->dfa) {
        const cons_dfa *d = m->p->dfa;
        int32_t s = m->state;
        for (size_t i = 0; i < n && s >= 0; i++) s = dfa_next(d, s, d->cls[b[i]]);
        if (s < 0) return 0;
        if (commit) m->state = s;
        return 1;
    }
    size_t pushed = 0;
    int r = 1;
    for (; pushed < n; pushed++) {
        r = earley_push(m->e, b[pushed]);
        if (r != 1) break;
    }
    if (r == 1 && commit) return 1;
    for (size_t k = 0; k < pushed; k++) earley_pop(m->e);
    return r;
}

static int advance(cons_matcher *m, const char *bytes, size_t n, bool commit) {
    const uint8_t *b = (const uint8_t *)bytes;
    if (m->done) return n ? 0 : 1;
    size_t k = 0;
    if (in_prefix(m)) {
        size_t rn = m->n_prefix - m->pre_pos;
        k = n < rn ? n : rn;
        if (memcmp(b, m->prefix + m->pre_pos, k) != 0) return 0;
    }
    int r = run_bytes(m, b + k, n - k, commit);
    if (r == 1 && commit) {
        m->pre_pos += k;
        m->pos += n;
    }
    return r;
}

int cons_matcher_accept_bytes(cons_matcher *m, const char *b, size_t n) {
    return advance(m, b, n, true) == 1 ? 0 : -1;
}

int cons_matcher_probe(cons_matcher *m, const char *b, size_t n) {
    return advance(m, b, n, false) == 1;
}

int cons_matcher_accept_token(cons_matcher *m, int32_t t) {
    const cons_vocab *v = m->v;
    if (t < 0 || t >= v->n_vocab || m->done) return -1;
    for (int32_t i = 0; i < v->n_eos; i++)
        if (v->eos[i] == t) {
            if (!cons_matcher_accepting(m)) return -1;
            m->done = true;
            return 0;
        }
    if (v->special[t] || v->len[t] == 0 || v->len[t] > MAX_TOKEN_BYTES) return -1;
    return cons_matcher_accept_bytes(m, v->blob + v->off[t], v->len[t]);
}

size_t cons_matcher_forced(cons_matcher *m, char *buf, size_t cap) {
    size_t n = 0;
    if (m->done) return 0;
    for (size_t k = m->pre_pos; k < m->n_prefix && n < cap; k++) buf[n++] = m->prefix[k];
    if (!m->p || n == cap) return n;
    if (m->p->dfa) {
        const cons_dfa *d = m->p->dfa;
        int32_t s = m->state;
        if (in_prefix(m)) s = 0;
        for (int32_t f; n < cap && s >= 0 && (f = dfa_forced(d, s)) >= 0;) {
            buf[n++] = (char)f;
            s = dfa_next(d, s, d->cls[f]);
        }
        return n;
    }
    /* during the prefix the chart is still at its start: where the prefix ends */
    size_t pushed = 0;
    while (n < cap && !earley_accepting(m->e)) {
        uint32_t nb[8];
        earley_next_bytes(m->e, nb);
        int cnt = 0, last = -1;
        for (int w = 0; w < 8 && cnt < 2; w++)
            if (nb[w]) {
                cnt += __builtin_popcount(nb[w]);
                last = w * 32 + __builtin_ctz(nb[w]);
            }
        if (cnt != 1 || earley_push(m->e, (uint8_t)last) != 1) break;
        pushed++;
        buf[n++] = (char)last;
    }
    for (size_t k = 0; k < pushed; k++) earley_pop(m->e);
    return n;
}

size_t cons_matcher_complete(cons_matcher *m, char *buf, size_t cap) {
    size_t n = 0;
    if (m->done) return 0;
    for (size_t k = m->pre_pos; k < m->n_prefix; k++) {
        if (n == cap) return (size_t)-1;
        buf[n++] = m->prefix[k];
    }
    if (!m->p) return n;
    if (m->p->dfa) {
        const cons_dfa *d = m->p->dfa;
        int32_t start = in_prefix(m) ? 0 : m->state, K = d->n_cls, N = d->cap_states;
        int32_t *par = malloc(sizeof *par * (size_t)N), *q = malloc(sizeof *q * (size_t)N);
        uint8_t *by = malloc((size_t)N);
        size_t res = (size_t)-1;
        if (!par || !q || !by) goto done;
        uint8_t rep[256];
        for (int b = 255; b >= 0; b--) rep[d->cls[b]] = (uint8_t)b;
        for (int32_t i = 0; i < N; i++) par[i] = -2;
        int32_t qh = 0, qt = 0, goal = -1;
        par[start] = -1;
        q[qt++] = start;
        while (qh < qt && goal < 0) {
            int32_t s = q[qh++];
            if (d->accept[s]) {
                goal = s;
                break;
            }
            for (int32_t c = 0; c < K; c++) {
                int32_t t = dfa_next(d, s, c);
                if (t >= 0 && par[t] == -2) {
                    par[t] = s;
                    by[t] = rep[c];
                    q[qt++] = t;
                }
            }
        }
        if (goal < 0) goto done;
        size_t len = 0;
        for (int32_t s = goal; par[s] >= 0; s = par[s]) len++;
        if (n + len > cap) goto done;
        size_t w = n + len;
        for (int32_t s = goal; par[s] >= 0; s = par[s]) buf[--w] = (char)by[s];
        res = n + len;
    done:
        free(par);
        free(q);
        free(by);
        return res;
    }
    /* recogniser: forced bytes, else closing bytes first, else the first live byte */
    static const char order[] = "\"}])>,;:0a ";
    size_t pushed = 0, res = (size_t)-1;
    while (n < cap) {
        if (earley_accepting(m->e)) {
            res = n;
            break;
        }
        uint32_t nb[8];
        earley_next_bytes(m->e, nb);
        int b = -1;
        for (const char *o = order; *o && b < 0; o++)
            if ((nb[(uint8_t)*o >> 5] >> ((uint8_t)*o & 31)) & 1) b = (uint8_t)*o;
        for (int x = 0; x < 256 && b < 0; x++)
            if ((nb[x >> 5] >> (x & 31)) & 1) b = x;
        if (b < 0 || earley_push(m->e, (uint8_t)b) != 1) break;
        pushed++;
        buf[n++] = (char)b;
    }
    for (size_t k = 0; k < pushed; k++) earley_pop(m->e);
    return res;
}
