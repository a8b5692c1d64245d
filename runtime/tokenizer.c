/* tokenizer: byte-level BPE and SentencePiece-style BPE over GGUF vocabularies
 * (see tokenizer.h).
 *
 * Encoding runs in three stages:
 *   1. special tokens are cut out of the text (longest match at each byte);
 *   2. each remaining fragment is split into words by the pre-tokenizer, a
 *      hand-written matcher equivalent to the model's split regex, working
 *      on code points classified by the generated Unicode tables;
 *   3. each word is merged by BPE: symbols in a doubly linked list, candidate
 *      pairs in a binary heap ordered by (rank, position); a popped pair is
 *      used only if both symbols still hold the ids it was pushed with (a
 *      merged symbol always covers more bytes, so a stale entry can never
 *      look valid again).
 */
#include "runtime/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/unicode.h"

typedef enum tok_kind { TOK_KIND_BPE, TOK_KIND_SPM } tok_kind;
typedef enum tok_pre { PRE_GPT2, PRE_SMOLLM, PRE_LLAMA3, PRE_QWEN2 } tok_pre;

typedef struct tok_entry {
    uint32_t text_off, text_len;   /* vocabulary text in blob (NUL-terminated) */
    uint32_t piece_off, piece_len; /* decoded bytes in blob (NUL-terminated) */
    float score;
    uint8_t type;
} tok_entry;

typedef struct merge_slot {
    uint64_t key; /* (left id << 32 | right id) + 1; 0 = empty */
    int32_t rank;
    int32_t result;
} merge_slot;

struct sgl_tokenizer {
    tok_kind kind;
    tok_pre pre;
    char model_name[32], pre_name[32];
    int32_t n_vocab;
    tok_entry *ent;
    char *blob;
    /* text -> id: open addressing, slot holds id + 1 (0 = empty) */
    uint32_t *vhash;
    size_t vhash_mask;
    merge_slot *mhash;
    size_t mhash_mask;
    /* BPE: the token of each byte's bytes_to_unicode character.
     * SPM: the <0xXX> byte-fallback token. -1 when missing. */
    int32_t byte_tok[256];
    int32_t bos, eos, unk, pad;
    bool add_bos, add_eos, add_space_prefix;
    int32_t *eog;
    size_t n_eog;
    /* Tokens matched whole in text (CONTROL and USER_DEFINED), longest first,
     * and which first bytes can start one. */
    int32_t *special;
    size_t n_special;
    uint8_t special_first[256];
    size_t max_piece;
};

/* ---- hashing ------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

static int32_t vocab_lookup(const sgl_tokenizer *tok, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & tok->vhash_mask;
    for (;;) {
        uint32_t v = tok->vhash[i];
        if (v == 0) return -1;
        const tok_entry *e = &tok->ent[v - 1];
        if (e->text_len == n && memcmp(tok->blob + e->text_off, s, n) == 0) return (int32_t)(v - 1);
        i = (i + 1) & tok->vhash_mask;
    }
}

static const merge_slot *merge_lookup(const sgl_tokenizer *tok, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & tok->mhash_mask;
    for (;;) {
        const merge_slot *m = &tok->mhash[i];
        if (m->key == key) return m;
        if (m->key == 0) return NULL;
        i = (i + 1) & tok->mhash_mask;
    }
}

/* ---- GPT-2 byte alphabet ------------------------------------------------ */

/* bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes map to U+0100.. in byte order. */
static void byte_alphabet(uint32_t cp_of_byte[256]) {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_of_byte[b] = printable ? (uint32_t)b : next++;
    }
}

/* ---- loading ------------------------------------------------------------ */

void tok_free(sgl_tokenizer *tok) {
    if (!tok) return;
    free(tok->ent);
    free(tok->blob);
    free(tok->vhash);
    free(tok->mhash);
    free(tok->eog);
    free(tok->special);
    free(tok);
}

static int cmp_special_len(const void *a, const void *b, void *ctx);

/* Sort helper without qsort_r portability worries: insertion sort by length
 * descending, then id (there are few special tokens). */
static void sort_specials(sgl_tokenizer *tok) {
    for (size_t i = 1; i < tok->n_special; i++) {
        int32_t x = tok->special[i];
        size_t j = i;
        while (j > 0 && cmp_special_len(&tok->special[j - 1], &x, tok) > 0) {
            tok->special[j] = tok->special[j - 1];
            j--;
        }
        tok->special[j] = x;
    }
}

static int cmp_special_len(const void *a, const void *b, void *ctx) {
    const sgl_tokenizer *tok = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = tok->ent[x].text_len, ly = tok->ent[y].text_len;
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Decodes a vocabulary text into the bytes it stands for. out must have room
 * for len bytes (decoding never grows the text). Returns the byte count. */
static size_t piece_from_text(const sgl_tokenizer *tok, const uint16_t *byte_of_cp_lo,
                              const char *s, size_t len, int type, char *out) {
    if (type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER_DEFINED) {
        memcpy(out, s, len);
        return len;
    }
    if (tok->kind == TOK_KIND_SPM) {
        unsigned v;
        if (type == TOK_TYPE_BYTE && len == 6 && sscanf(s, "<0x%2X>", &v) == 1) {
            out[0] = (char)v;
            return 1;
        }
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(s + i, "\xE2\x96\x81", 3) == 0) { /* U+2581 */
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s[i++];
            }
        }
        return o;
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = uni_decode((const uint8_t *)s + i, len - i, &cp);
        if (cp < 0x144 && byte_of_cp_lo[cp] <= 0xFF) out[o++] = (char)byte_of_cp_lo[cp];
        else {
            memcpy(out + o, s + i, n);
            o += n;
        }
        i += n;
    }
    return o;
}

static bool streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

sgl_tokenizer *tok_load_gguf(const gguf_file *f, sgl_error *err) {
    uint64_t n = gguf_arr_len(f, "tokenizer.ggml.tokens");
    if (n == 0) {
        sgl_error_set(err, "tokenizer: GGUF has no tokenizer.ggml.tokens array");
        return NULL;
    }
    if (n > INT32_MAX / 2) {
        sgl_error_set(err, "tokenizer: %llu tokens is too many", (unsigned long long)n);
        return NULL;
    }
    char *model = gguf_get_string(f, "tokenizer.ggml.model");
    char *pre = gguf_get_string(f, "tokenizer.ggml.pre");
    sgl_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) goto oom;
    if (!model || streq(model, "gpt2")) tok->kind = TOK_KIND_BPE;
    else if (streq(model, "llama")) tok->kind = TOK_KIND_SPM;
    else {
        sgl_error_set(err, "tokenizer: unsupported tokenizer.ggml.model '%s' (want gpt2 or llama)",
                      model);
        free(model);
        free(pre);
        tok_free(tok);
        return NULL;
    }
    snprintf(tok->model_name, sizeof tok->model_name, "%s", model ? model : "gpt2");
    if (streq(pre, "smollm")) tok->pre = PRE_SMOLLM;
    else if (streq(pre, "llama-bpe") || streq(pre, "llama3") || streq(pre, "llama-v3"))
        tok->pre = PRE_LLAMA3;
    else if (streq(pre, "qwen2")) tok->pre = PRE_QWEN2;
    else tok->pre = PRE_GPT2;
    snprintf(tok->pre_name, sizeof tok->pre_name, "%s",
             tok->kind == TOK_KIND_SPM ? "spm" : pre ? pre : "gpt2");
    free(model);
    free(pre);

    tok->n_vocab = (int32_t)n;
    tok->ent = calloc(n, sizeof *tok->ent);
    bool has_types = gguf_arr_len(f, "tokenizer.ggml.token_type") == n;
    bool has_scores = gguf_arr_len(f, "tokenizer.ggml.scores") == n;
    size_t blob_len = 0;
    for (uint64_t i = 0; i < n; i++) blob_len += 2 * (gguf_arr_str(f, "tokenizer.ggml.tokens", i).len + 1);
    tok->blob = malloc(blob_len ? blob_len : 1);
    tok->vhash_mask = pow2_at_least(2 * n) - 1;
    tok->vhash = calloc(tok->vhash_mask + 1, sizeof *tok->vhash);
    if (!tok->ent || !tok->blob || !tok->vhash) goto oom;

    uint32_t cp_of_byte[256];
    uint16_t byte_of_cp_lo[0x144]; /* inverse of bytes_to_unicode (all cps < 0x144) */
    byte_alphabet(cp_of_byte);
    for (size_t c = 0; c < SGL_ARRAY_LEN(byte_of_cp_lo); c++) byte_of_cp_lo[c] = 0xFFFF;
    for (int b = 0; b < 256; b++) byte_of_cp_lo[cp_of_byte[b]] = (uint16_t)b;

    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(f, "tokenizer.ggml.tokens", i);
        tok_entry *e = &tok->ent[i];
        e->type = has_types ? (uint8_t)gguf_arr_int(f, "tokenizer.ggml.token_type", i, 1) : 1;
        e->score = has_scores ? (float)gguf_arr_float(f, "tokenizer.ggml.scores", i, 0) : 0.0f;
        e->text_off = (uint32_t)off;
        e->text_len = (uint32_t)s.len;
        if (s.len) memcpy(tok->blob + off, s.ptr, s.len);
        tok->blob[off + s.len] = 0;
        off += s.len + 1;
        e->piece_off = (uint32_t)off;
        e->piece_len = (uint32_t)piece_from_text(tok, byte_of_cp_lo, tok->blob + e->text_off,
                                                s.len, e->type, tok->blob + off);
        tok->blob[off + e->piece_len] = 0;
        off += e->piece_len + 1;
        if (e->piece_len > tok->max_piece) tok->max_piece = e->piece_len;
        /* First id wins for duplicate texts (as HF's vocab map would keep one). */
        if (vocab_lookup(tok, tok->blob + e->text_off, s.len) < 0) {
            size_t h = hash_bytes(tok->blob + e->text_off, s.len) & tok->vhash_mask;
            while (tok->vhash[h]) h = (h + 1) & tok->vhash_mask;
            tok->vhash[h] = (uint32_t)i + 1;
        }
    }

    for (int b = 0; b < 256; b++) {
        char buf[8];
        if (tok->kind == TOK_KIND_BPE) {
            size_t len = uni_encode(cp_of_byte[b], buf);
            tok->byte_tok[b] = vocab_lookup(tok, buf, len);
        } else {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            tok->byte_tok[b] = vocab_lookup(tok, buf, 6);
        }
    }

    if (tok->kind == TOK_KIND_BPE) {
        uint64_t nm = gguf_arr_len(f, "tokenizer.ggml.merges");
        tok->mhash_mask = pow2_at_least(2 * nm + 2) - 1;
        tok->mhash = calloc(tok->mhash_mask + 1, sizeof *tok->mhash);
        if (!tok->mhash) goto oom;
        for (uint64_t r = 0; r < nm; r++) {
            gguf_str m = gguf_arr_str(f, "tokenizer.ggml.merges", r);
            const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
            if (!sp) {
                sgl_error_set(err, "tokenizer: merge %llu ('%.*s') has no space",
                              (unsigned long long)r, (int)SGL_MIN(m.len, 64), m.ptr);
                goto fail;
            }
            size_t la = (size_t)(sp - m.ptr), lb = m.len - la - 1;
            int32_t a = vocab_lookup(tok, m.ptr, la), b = vocab_lookup(tok, sp + 1, lb);
            char stackbuf[256];
            char *cat = la + lb <= sizeof stackbuf ? stackbuf : malloc(la + lb);
            if (!cat) goto oom;
            memcpy(cat, m.ptr, la);
            memcpy(cat + la, sp + 1, lb);
            int32_t c = vocab_lookup(tok, cat, la + lb);
            if (cat != stackbuf) free(cat);
            if (a < 0 || b < 0 || c < 0) continue; /* unusable merge: keeps its rank slot */
            uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
            size_t h = hash_u64(key) & tok->mhash_mask;
            while (tok->mhash[h].key && tok->mhash[h].key != key) h = (h + 1) & tok->mhash_mask;
            if (tok->mhash[h].key) continue; /* duplicate pair: the first (best) rank stays */
            tok->mhash[h].key = key;
            tok->mhash[h].rank = (int32_t)r;
            tok->mhash[h].result = c;
        }
    }

    tok->bos = (int32_t)gguf_get_int(f, "tokenizer.ggml.bos_token_id", -1);
    tok->eos = (int32_t)gguf_get_int(f, "tokenizer.ggml.eos_token_id", -1);
    tok->unk = (int32_t)gguf_get_int(f, "tokenizer.ggml.unknown_token_id", -1);
    tok->pad = (int32_t)gguf_get_int(f, "tokenizer.ggml.padding_token_id", -1);
    if (tok->bos >= tok->n_vocab) tok->bos = -1;
    if (tok->eos >= tok->n_vocab) tok->eos = -1;
    if (tok->unk >= tok->n_vocab) tok->unk = -1;
    if (tok->pad >= tok->n_vocab) tok->pad = -1;
    if (tok->kind == TOK_KIND_SPM && tok->unk < 0) tok->unk = vocab_lookup(tok, "<unk>", 5);
    tok->add_bos = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", tok->kind == TOK_KIND_SPM);
    tok->add_eos = gguf_get_bool(f, "tokenizer.ggml.add_eos_token", false);
    tok->add_space_prefix =
        gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", tok->kind == TOK_KIND_SPM);

    static const char *const eog_names[] = {"<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>",
                                            "<|end|>", "<|eom_id|>", "<end_of_turn>"};
    tok->eog = malloc((SGL_ARRAY_LEN(eog_names) + 1) * sizeof *tok->eog);
    if (!tok->eog) goto oom;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        bool is = id == tok->eos;
        for (size_t k = 0; !is && k < SGL_ARRAY_LEN(eog_names); k++)
            is = streq(tok->blob + tok->ent[id].text_off, eog_names[k]) &&
                 vocab_lookup(tok, eog_names[k], strlen(eog_names[k])) == id;
        if (is && tok->n_eog < SGL_ARRAY_LEN(eog_names) + 1) tok->eog[tok->n_eog++] = id;
    }

    size_t ns = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if ((tok->ent[id].type == TOK_TYPE_CONTROL || tok->ent[id].type == TOK_TYPE_USER_DEFINED) &&
            tok->ent[id].text_len > 0)
            ns++;
    tok->special = malloc((ns ? ns : 1) * sizeof *tok->special);
    if (!tok->special) goto oom;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if ((tok->ent[id].type == TOK_TYPE_CONTROL || tok->ent[id].type == TOK_TYPE_USER_DEFINED) &&
            tok->ent[id].text_len > 0) {
            tok->special[tok->n_special++] = id;
            tok->special_first[(uint8_t)tok->blob[tok->ent[id].text_off]] = 1;
        }
    sort_specials(tok);
    return tok;

oom:
    sgl_error_set(err, "tokenizer: out of memory loading the vocabulary");
fail:
    tok_free(tok);
    return NULL;
}

/* ---- accessors ---------------------------------------------------------- */

int32_t tok_vocab_size(const sgl_tokenizer *tok) { return tok->n_vocab; }
int32_t tok_bos(const sgl_tokenizer *tok) { return tok->bos; }
int32_t tok_eos(const sgl_tokenizer *tok) { return tok->eos; }
int32_t tok_unk(const sgl_tokenizer *tok) { return tok->unk; }
int32_t tok_pad(const sgl_tokenizer *tok) { return tok->pad; }
bool tok_add_bos(const sgl_tokenizer *tok) { return tok->add_bos; }
bool tok_add_eos(const sgl_tokenizer *tok) { return tok->add_eos; }
size_t tok_max_piece_len(const sgl_tokenizer *tok) { return tok->max_piece; }
const char *tok_model_kind(const sgl_tokenizer *tok) { return tok->model_name; }
const char *tok_pre_kind(const sgl_tokenizer *tok) { return tok->pre_name; }

bool tok_is_eog(const sgl_tokenizer *tok, int32_t id) {
    for (size_t i = 0; i < tok->n_eog; i++)
        if (tok->eog[i] == id) return true;
    return false;
}

const int32_t *tok_eog_ids(const sgl_tokenizer *tok, size_t *n) {
    *n = tok->n_eog;
    return tok->eog;
}

int tok_token_type(const sgl_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_vocab) return TOK_TYPE_UNDEFINED;
    return tok->ent[id].type;
}

bool tok_is_special(const sgl_tokenizer *tok, int32_t id) {
    return tok_token_type(tok, id) == TOK_TYPE_CONTROL;
}

const char *tok_piece(const sgl_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = tok->ent[id].piece_len;
    return tok->blob + tok->ent[id].piece_off;
}

const char *tok_text(const sgl_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_vocab) return NULL;
    return tok->blob + tok->ent[id].text_off;
}

int32_t tok_find(const sgl_tokenizer *tok, const char *piece) {
    return vocab_lookup(tok, piece, strlen(piece));
}

/* ---- encoder state ------------------------------------------------------ */

typedef struct heap_ent {
    float key;    /* BPE: merge rank (lower first); SPM: -score */
    uint32_t pos; /* left symbol index: ties go to the leftmost pair */
    uint32_t rpos;
    int32_t a, b; /* BPE: the pair's ids; SPM: the symbols' byte lengths */
} heap_ent;

typedef struct enc {
    const sgl_tokenizer *tok;
    int32_t *ids;
    size_t n_ids, cap_ids;
    /* pre-tokenizer scratch: code points of one fragment */
    uint32_t *cp;
    uint8_t *cls;
    uint32_t *off; /* byte offset of each code point, plus the end */
    size_t cap_cp;
    /* BPE scratch: symbols of one word */
    int32_t *sym;    /* BPE: token id; SPM: byte length (0 = merged away) */
    uint32_t *start; /* SPM: byte offset of the symbol */
    int32_t *prev, *next;
    size_t cap_sym;
    heap_ent *heap;
    size_t n_heap, cap_heap;
    /* tok_pretokenize: word end offsets instead of ids */
    bool words_only;
    size_t *ends;
    size_t n_ends, cap_ends;
    bool oom;
} enc;

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static void emit(enc *e, int32_t id) {
    if (e->oom) return;
    if (e->n_ids == e->cap_ids) {
        size_t c = e->cap_ids ? e->cap_ids * 2 : 64;
        int32_t *p = realloc(e->ids, c * sizeof *p);
        if (!p) {
            e->oom = true;
            return;
        }
        e->ids = p;
        e->cap_ids = c;
    }
    e->ids[e->n_ids++] = id;
}

static bool heap_less(const heap_ent *x, const heap_ent *y) {
    return x->key < y->key || (x->key == y->key && x->pos < y->pos);
}

static void heap_push(enc *e, heap_ent v) {
    if (!grow((void **)&e->heap, &e->cap_heap, e->n_heap + 1, sizeof *e->heap)) {
        e->oom = true;
        return;
    }
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&v, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = v;
}

static heap_ent heap_pop(enc *e) {
    heap_ent top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!heap_less(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static bool sym_reserve(enc *e, size_t n) {
    size_t c = e->cap_sym;
    bool ok = grow((void **)&e->sym, &c, n, sizeof *e->sym);
    c = e->cap_sym;
    ok = ok && grow((void **)&e->start, &c, n, sizeof *e->start);
    c = e->cap_sym;
    ok = ok && grow((void **)&e->prev, &c, n, sizeof *e->prev);
    c = e->cap_sym;
    ok = ok && grow((void **)&e->next, &c, n, sizeof *e->next);
    if (ok) e->cap_sym = c;
    else e->oom = true;
    return ok;
}

/* ---- byte-level BPE ----------------------------------------------------- */

static void bpe_push_pair(enc *e, int32_t l) {
    int32_t r = e->next[l];
    if (l < 0 || r < 0) return;
    const merge_slot *m = merge_lookup(e->tok, e->sym[l], e->sym[r]);
    if (!m) return;
    heap_push(e, (heap_ent){(float)m->rank, (uint32_t)l, (uint32_t)r, e->sym[l], e->sym[r]});
}

/* Encodes one pre-tokenized word s[0..n) (n >= 1). */
static void bpe_word(enc *e, const uint8_t *s, size_t n) {
    const sgl_tokenizer *tok = e->tok;
    if (n == 1) {
        if (tok->byte_tok[s[0]] >= 0) emit(e, tok->byte_tok[s[0]]);
        return;
    }
    if (!sym_reserve(e, n)) return;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_tok[s[i]];
        /* A byte the vocabulary has no token for is dropped, as Hugging
         * Face's BPE does without an unk token (SmolLM2 lacks 21 bytes,
         * e.g. 0x04; its GGUF unknown_token_id is <|endoftext|>, which must
         * not appear in the middle of text). */
        if (id < 0) continue;
        e->sym[m] = id;
        e->prev[m] = (int32_t)m - 1;
        e->next[m] = (int32_t)m + 1;
        m++;
    }
    if (m == 0) return;
    e->next[m - 1] = -1;
    e->n_heap = 0;
    for (size_t i = 0; i + 1 < m; i++) bpe_push_pair(e, (int32_t)i);
    while (e->n_heap && !e->oom) {
        heap_ent h = heap_pop(e);
        int32_t l = (int32_t)h.pos, r = (int32_t)h.rpos;
        if (e->sym[l] < 0 || e->next[l] != r || e->sym[l] != h.a || e->sym[r] != h.b) continue;
        e->sym[l] = merge_lookup(tok, h.a, h.b)->result;
        e->sym[r] = -1;
        e->next[l] = e->next[r];
        if (e->next[l] >= 0) e->prev[e->next[l]] = l;
        if (e->prev[l] >= 0) bpe_push_pair(e, e->prev[l]);
        bpe_push_pair(e, l);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i]) emit(e, e->sym[i]);
}

/* ---- SentencePiece BPE -------------------------------------------------- */

static void spm_push_pair(enc *e, const uint8_t *s, int32_t l) {
    int32_t r = e->next[l];
    if (l < 0 || r < 0) return;
    int32_t id = vocab_lookup(e->tok, (const char *)s + e->start[l], (size_t)(e->sym[l] + e->sym[r]));
    if (id < 0) return;
    heap_push(e, (heap_ent){-e->tok->ent[id].score, (uint32_t)l, (uint32_t)r, e->sym[l], e->sym[r]});
}

/* Encodes a normalised fragment s[0..n) ("▁" for spaces) by merging the
 * adjacent pair whose concatenation is the best-scoring vocabulary entry;
 * pieces left outside the vocabulary fall back to <0xXX> byte tokens. */
static void spm_fragment(enc *e, const uint8_t *s, size_t n) {
    if (n == 0 || !sym_reserve(e, n)) return;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = uni_decode(s + i, n - i, &cp);
        e->sym[m] = (int32_t)l;
        e->start[m] = (uint32_t)i;
        e->prev[m] = (int32_t)m - 1;
        e->next[m] = (int32_t)m + 1;
        m++;
        i += l;
    }
    e->next[m - 1] = -1;
    e->n_heap = 0;
    for (size_t i = 0; i + 1 < m; i++) spm_push_pair(e, s, (int32_t)i);
    while (e->n_heap && !e->oom) {
        heap_ent h = heap_pop(e);
        int32_t l = (int32_t)h.pos, r = (int32_t)h.rpos;
        if (e->sym[l] == 0 || e->next[l] != r || e->sym[l] != h.a || e->sym[r] != h.b) continue;
        e->sym[l] += e->sym[r];
        e->sym[r] = 0;
        e->next[l] = e->next[r];
        if (e->next[l] >= 0) e->prev[e->next[l]] = l;
        if (e->prev[l] >= 0) spm_push_pair(e, s, e->prev[l]);
        spm_push_pair(e, s, l);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i]) {
        int32_t id = vocab_lookup(e->tok, (const char *)s + e->start[i], (size_t)e->sym[i]);
        if (id >= 0 && e->tok->ent[id].type != TOK_TYPE_UNUSED) {
            emit(e, id);
            continue;
        }
        for (int32_t k = 0; k < e->sym[i]; k++) {
            int32_t b = e->tok->byte_tok[s[e->start[i] + (uint32_t)k]];
            if (b < 0) b = e->tok->unk;
            if (b >= 0) emit(e, b);
        }
    }
}

/* ---- pre-tokenizers ----------------------------------------------------- */

/* Decodes fragment s[0..n) into e->cp / e->cls / e->off. Returns the code
 * point count. Invalid bytes become one UNI_INVALID "code point" each with
 * no class (they behave like punctuation). */
static size_t decode_fragment(enc *e, const uint8_t *s, size_t n) {
    size_t c1 = e->cap_cp, c2 = e->cap_cp, c3 = e->cap_cp;
    if (!grow((void **)&e->cp, &c1, n + 1, sizeof *e->cp) ||
        !grow((void **)&e->cls, &c2, n + 1, sizeof *e->cls) ||
        !grow((void **)&e->off, &c3, n + 1, sizeof *e->off)) {
        e->oom = true;
        return 0;
    }
    e->cap_cp = c1;
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        uint32_t cp;
        size_t l = uni_decode(s + i, n - i, &cp);
        e->cp[k] = cp;
        e->cls[k] = cp == UNI_INVALID ? 0 : (uint8_t)uni_class(cp);
        e->off[k] = (uint32_t)i;
        i += l;
    }
    e->off[k] = (uint32_t)n;
    return k;
}

#define IS_L(i) (e->cls[i] & UNI_LETTER)
#define IS_N(i) (e->cls[i] & UNI_NUMBER)
#define IS_S(i) (e->cls[i] & UNI_SPACE)
#define IS_LNS(i) (e->cls[i] & (UNI_LETTER | UNI_NUMBER | UNI_SPACE))

static size_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* Length (in code points) of a contraction at i: 's 't 'm 'd 're 've 'll. */
static size_t match_contraction(const enc *e, size_t i, size_t n, bool icase) {
    if (e->cp[i] != '\'' || i + 1 >= n) return 0;
    uint32_t a = e->cp[i + 1], b = i + 2 < n ? e->cp[i + 2] : 0;
    if (icase) { /* Unicode case folding as Oniguruma does it: U+017F (long s) is 's' */
        a = a == 0x17F ? 's' : (uint32_t)lower_ascii(a);
        b = b == 0x17F ? 's' : (uint32_t)lower_ascii(b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* `\s+(?!\S)|\s+` at i (a space): the run, less its last character when a
 * non-space follows and the run is longer than one. */
static size_t match_space_run(const enc *e, size_t i, size_t n) {
    size_t j = i;
    while (j < n && IS_S(j)) j++;
    if (j < n && j - i > 1) j--;
    return j;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Returns the end (code point index) of the match starting at i < n. */
static size_t match_gpt2(const enc *e, size_t i, size_t n) {
    size_t c = match_contraction(e, i, n, false);
    if (c) return i + c;
    size_t k = (e->cp[i] == ' ' && i + 1 < n && !IS_S(i + 1)) ? i + 1 : i;
    size_t j = k;
    if (IS_L(k)) {
        while (j < n && IS_L(j)) j++;
        return j;
    }
    if (IS_N(k)) {
        while (j < n && IS_N(j)) j++;
        return j;
    }
    if (!IS_S(k)) {
        while (j < n && !IS_LNS(j)) j++;
        return j;
    }
    return match_space_run(e, i, n);
}

/* llama-3 (digits = 3) and qwen2 (digits = 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const enc *e, size_t i, size_t n, size_t digits) {
    size_t c = match_contraction(e, i, n, true);
    if (c) return i + c;
    bool crlf = e->cp[i] == '\r' || e->cp[i] == '\n';
    size_t j;
    if (!crlf && !IS_L(i) && !IS_N(i) && i + 1 < n && IS_L(i + 1)) {
        j = i + 1;
        while (j < n && IS_L(j)) j++;
        return j;
    }
    if (IS_L(i)) {
        j = i;
        while (j < n && IS_L(j)) j++;
        return j;
    }
    if (IS_N(i)) {
        j = i;
        while (j < n && j - i < digits && IS_N(j)) j++;
        return j;
    }
    size_t k = (e->cp[i] == ' ' && i + 1 < n && !IS_LNS(i + 1)) ? i + 1 : i;
    if (!IS_LNS(k)) {
        j = k;
        while (j < n && !IS_LNS(j)) j++;
        while (j < n && (e->cp[j] == '\r' || e->cp[j] == '\n')) j++;
        return j;
    }
    /* whitespace at i */
    j = i;
    size_t last_nl = n;
    while (j < n && IS_S(j)) {
        if (e->cp[j] == '\r' || e->cp[j] == '\n') last_nl = j;
        j++;
    }
    if (last_nl < n) return last_nl + 1;
    return match_space_run(e, i, n);
}

/* Pre-tokenizes fragment s[0..n) and BPE-encodes each word. */
static void bpe_fragment(enc *e, const uint8_t *s, size_t n) {
    size_t ncp = decode_fragment(e, s, n);
    if (e->oom) return;
    const sgl_tokenizer *tok = e->tok;
    size_t i = 0, seg_end = 0;
    while (i < ncp && !e->oom) {
        size_t j;
        switch (tok->pre) {
        case PRE_SMOLLM:
            /* Digits(individual_digits) first: a number character is a word
             * of its own, and the regex never sees across it. */
            if (IS_N(i)) {
                j = i + 1;
                break;
            }
            if (seg_end <= i) {
                seg_end = i;
                while (seg_end < ncp && !IS_N(seg_end)) seg_end++;
            }
            j = match_gpt2(e, i, seg_end);
            break;
        case PRE_LLAMA3: j = match_llama3(e, i, ncp, 3); break;
        case PRE_QWEN2: j = match_llama3(e, i, ncp, 1); break;
        default: j = match_gpt2(e, i, ncp); break;
        }
        if (e->words_only) {
            if (grow((void **)&e->ends, &e->cap_ends, e->n_ends + 1, sizeof *e->ends))
                e->ends[e->n_ends++] = e->off[j];
            else e->oom = true;
        } else {
            bpe_word(e, s + e->off[i], e->off[j] - e->off[i]);
        }
        i = j;
    }
}

/* Normalises a raw fragment for SentencePiece (spaces -> "▁", optional
 * leading "▁") and encodes it. */
static void spm_raw(enc *e, const char *s, size_t n, bool prefix) {
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t len = n + 2 * spaces + (prefix ? 3 : 0); /* ' ' (1 byte) -> U+2581 (3 bytes) */
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        e->oom = true;
        return;
    }
    size_t o = 0;
    if (prefix) {
        memcpy(buf, "\xE2\x96\x81", 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            buf[o++] = (uint8_t)s[i];
        }
    }
    spm_fragment(e, buf, o);
    free(buf);
}

static void enc_free_scratch(enc *e) {
    free(e->cp);
    free(e->cls);
    free(e->off);
    free(e->sym);
    free(e->start);
    free(e->prev);
    free(e->next);
    free(e->heap);
}

int tok_pretokenize(const sgl_tokenizer *tok, const char *text, size_t len, size_t **ends,
                    size_t *n_words, sgl_error *err) {
    enc e = {.tok = tok, .words_only = true};
    if (tok->kind == TOK_KIND_BPE) bpe_fragment(&e, (const uint8_t *)text, len);
    else if (len > 0 && grow((void **)&e.ends, &e.cap_ends, 1, sizeof *e.ends)) e.ends[e.n_ends++] = len;
    if (!e.oom && !e.ends) {
        e.ends = malloc(sizeof *e.ends);
        if (!e.ends) e.oom = true;
    }
    enc_free_scratch(&e);
    if (e.oom) {
        free(e.ends);
        *ends = NULL;
        *n_words = 0;
        return sgl_error_set(err, "tokenizer: out of memory pre-tokenizing %zu bytes", len);
    }
    *ends = e.ends;
    *n_words = e.n_ends;
    return 0;
}

/* Returns the id of the longest special token at s[0..n) that may be matched
 * (CONTROL only with parse_special), or -1. */
static int32_t match_special(const sgl_tokenizer *tok, const char *s, size_t n, bool parse_special) {
    for (size_t k = 0; k < tok->n_special; k++) {
        const tok_entry *t = &tok->ent[tok->special[k]];
        if (t->text_len > n) continue;
        if (t->type == TOK_TYPE_CONTROL && !parse_special) continue;
        if (memcmp(s, tok->blob + t->text_off, t->text_len) == 0) return tok->special[k];
    }
    return -1;
}

int tok_encode_ex(const sgl_tokenizer *tok, const char *text, size_t len, unsigned flags,
                  int32_t **ids, size_t *n_ids, sgl_error *err) {
    enc e = {.tok = tok};
    bool parse_special = flags & TOK_ENC_PARSE_SPECIAL;
    bool prev_special = true; /* SPM: space prefix at the start and after specials */
    if ((flags & TOK_ENC_ADD_SPECIAL) && tok->add_bos && tok->bos >= 0) emit(&e, tok->bos);
    size_t frag = 0;
    for (size_t i = 0; i <= len && !e.oom;) {
        int32_t sp = -1;
        if (i < len && tok->special_first[(uint8_t)text[i]])
            sp = match_special(tok, text + i, len - i, parse_special);
        if (sp < 0 && i < len) {
            i++;
            continue;
        }
        if (i > frag) {
            if (tok->kind == TOK_KIND_BPE) bpe_fragment(&e, (const uint8_t *)text + frag, i - frag);
            else spm_raw(&e, text + frag, i - frag, tok->add_space_prefix && prev_special);
            prev_special = false;
        }
        if (sp < 0) break; /* i == len */
        emit(&e, sp);
        prev_special = true;
        i += tok->ent[sp].text_len;
        frag = i;
    }
    if ((flags & TOK_ENC_ADD_SPECIAL) && tok->add_eos && tok->eos >= 0) emit(&e, tok->eos);
    if (!e.oom && !e.ids) {
        e.ids = malloc(sizeof *e.ids);
        if (!e.ids) e.oom = true;
    }
    enc_free_scratch(&e);
    if (e.oom) {
        free(e.ids);
        *ids = NULL;
        *n_ids = 0;
        return sgl_error_set(err, "tokenizer: out of memory encoding %zu bytes", len);
    }
    *ids = e.ids;
    *n_ids = e.n_ids;
    return 0;
}

int tok_encode(const sgl_tokenizer *tok, const char *text, size_t len, bool parse_special,
               int32_t **ids, size_t *n_ids, sgl_error *err) {
    return tok_encode_ex(tok, text, len, parse_special ? TOK_ENC_PARSE_SPECIAL : 0, ids, n_ids,
                         err);
}

/* ---- decoding ----------------------------------------------------------- */

int tok_decode(const sgl_tokenizer *tok, const int32_t *ids, size_t n, sgl_strbuf *out,
               bool skip_special) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab) return -1;
        const tok_entry *t = &tok->ent[ids[i]];
        if (skip_special && t->type == TOK_TYPE_CONTROL) continue;
        if (sgl_strbuf_append(out, tok->blob + t->piece_off, t->piece_len)) return -1;
    }
    return 0;
}

void tok_stream_init(tok_stream *s, bool skip_special) {
    memset(s, 0, sizeof *s);
    s->skip_special = skip_special;
}

size_t tok_stream_cap(const sgl_tokenizer *tok) { return 3 * (tok->max_piece + 4); }

typedef struct outbuf {
    char *p;
    size_t n, cap;
} outbuf;

static void out_put(outbuf *o, const void *src, size_t n) {
    if (o->n + n > o->cap) return; /* documented: output beyond cap is dropped */
    memcpy(o->p + o->n, src, n);
    o->n += n;
}

static void out_fffd(outbuf *o) { out_put(o, "\xEF\xBF\xBD", 3); }

size_t tok_stream_feed(tok_stream *s, const sgl_tokenizer *tok, int32_t id, char *out,
                       size_t cap) {
    if (id < 0 || id >= tok->n_vocab) return 0;
    const tok_entry *t = &tok->ent[id];
    if (s->skip_special && t->type == TOK_TYPE_CONTROL) return 0;
    const uint8_t *piece = (const uint8_t *)tok->blob + t->piece_off;
    size_t np = s->n_pend, total = np + t->piece_len;
    /* The input is pend ++ piece; at(k) reads it without copying. */
#define AT(k) ((k) < np ? s->pend[k] : piece[(k) - np])
    outbuf o = {out, 0, cap};
    size_t k = 0;
    s->n_pend = 0;
    while (k < total) {
        uint8_t b = AT(k);
        if (b < 0x80) {
            out_put(&o, &b, 1);
            k++;
            continue;
        }
        uint8_t seq[4];
        size_t have = 0;
        while (have < 4 && k + have < total) {
            seq[have] = AT(k + have);
            have++;
        }
        uint32_t cp;
        size_t l = uni_decode(seq, have, &cp);
        if (cp != UNI_INVALID) {
            out_put(&o, seq, l);
            k += l;
            continue;
        }
        /* Invalid here: either an incomplete tail (hold it back) or a
         * maximal invalid subpart (one U+FFFD). */
        size_t vp = uni_valid_prefix_len(seq, have);
        if (vp == have && k + have == total) {
            memcpy(s->pend, seq, have);
            s->n_pend = (uint8_t)have;
            break;
        }
        size_t bad = 1;
        while (bad < have && uni_valid_prefix_len(seq, bad + 1) == bad + 1) bad++;
        out_fffd(&o);
        k += bad;
    }
#undef AT
    return o.n;
}

size_t tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    outbuf o = {out, 0, cap};
    if (s->n_pend) out_fffd(&o);
    s->n_pend = 0;
    return o.n;
}
