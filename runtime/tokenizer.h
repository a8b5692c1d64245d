/* tokenizer: text <-> token ids from a GGUF file's tokenizer.* metadata.
 *
 * Two vocabulary kinds (tokenizer.ggml.model):
 *   "gpt2"  byte-level BPE (GPT-2 bytes_to_unicode alphabet, merges ranked by
 *           their order in tokenizer.ggml.merges), with the pre-tokenizer
 *           chosen by tokenizer.ggml.pre: "smollm" (digits split one by one,
 *           then the GPT-2 regex), "llama-bpe"/"llama3" (llama-3 regex),
 *           "qwen2", anything else -> the GPT-2 regex.
 *   "llama" SentencePiece-style BPE over scores: "▁" for space, optional
 *           space prefix (tokenizer.ggml.add_space_prefix), byte fallback
 *           through <0xXX> tokens.
 * Special tokens (token_type CONTROL or USER_DEFINED) are split out of the
 * text first, longest match first, when TOK_ENC_PARSE_SPECIAL is given.
 *
 * A sgl_tokenizer copies everything it needs out of the gguf_file, so the
 * file may be closed after tok_load_gguf. It is immutable after loading and
 * safe to share between threads (encoding uses only per-call scratch memory).
 */
#ifndef SGL_TOKENIZER_H
#define SGL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/gguf.h"
#include "util/util.h"

typedef struct sgl_tokenizer sgl_tokenizer;

/* tokenizer.ggml.token_type values (same numbering as llama.cpp / GGUF). */
typedef enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,      /* <|im_start|>, <s>, ...: special */
    TOK_TYPE_USER_DEFINED = 4, /* added tokens: also matched whole in text */
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6          /* SentencePiece <0xXX> byte fallback */
} tok_type;

/* Loads the tokenizer described by f's tokenizer.* keys. Returns a new
 * tokenizer (caller frees with tok_free) or NULL with err set (missing
 * tokens array, unknown model kind, malformed merges...). */
sgl_tokenizer *tok_load_gguf(const gguf_file *f, sgl_error *err);
void tok_free(sgl_tokenizer *tok);

/* ---- encoding ----------------------------------------------------------- */

/* Flags of tok_encode_ex. */
enum {
    /* Recognise special/added tokens ("<|im_start|>") written inside text. */
    TOK_ENC_PARSE_SPECIAL = 1u << 0,
    /* Add BOS in front / EOS at the end when the GGUF asks for it
     * (tokenizer.ggml.add_bos_token / add_eos_token). Off = nothing added,
     * which is what Hugging Face's tokenizer does for SmolLM2 whatever
     * add_special_tokens says (its tokenizer.json has no post-processor). */
    TOK_ENC_ADD_SPECIAL = 1u << 1,
};

/* Encodes text[0..len) (any bytes; invalid UTF-8 is encoded byte by byte;
 * a byte-level vocabulary's missing bytes are dropped, as HF does: SmolLM2
 * has no token for 21 bytes such as 0x04, so decode(encode(x)) lacks them).
 * On success returns 0 and stores a malloc'd array (caller frees; non-NULL
 * even when *n_ids is 0) in *ids. Returns -1 with err set only when memory
 * runs out. */
int tok_encode_ex(const sgl_tokenizer *tok, const char *text, size_t len, unsigned flags,
                  int32_t **ids, size_t *n_ids, sgl_error *err);
/* tok_encode_ex with TOK_ENC_PARSE_SPECIAL if parse_special, no BOS/EOS. */
int tok_encode(const sgl_tokenizer *tok, const char *text, size_t len, bool parse_special,
               int32_t **ids, size_t *n_ids, sgl_error *err);

/* Splits text[0..len) into the words the pre-tokenizer hands to BPE
 * (special tokens are not looked for here). On success returns 0 and stores
 * a malloc'd array (caller frees; non-NULL) of each word's end offset in
 * bytes, in order, in *ends. A SentencePiece vocabulary has no pre-tokenizer:
 * one word, the whole text. Returns -1 with err set when memory runs out. */
int tok_pretokenize(const sgl_tokenizer *tok, const char *text, size_t len, size_t **ends,
                    size_t *n_words, sgl_error *err);

/* ---- vocabulary ---------------------------------------------------------- */

int32_t tok_vocab_size(const sgl_tokenizer *tok);
/* Special ids from the GGUF, or -1 when absent. */
int32_t tok_bos(const sgl_tokenizer *tok);
int32_t tok_eos(const sgl_tokenizer *tok);
int32_t tok_unk(const sgl_tokenizer *tok);
int32_t tok_pad(const sgl_tokenizer *tok);
/* What the GGUF says about adding BOS / EOS (see TOK_ENC_ADD_SPECIAL). */
bool tok_add_bos(const sgl_tokenizer *tok);
bool tok_add_eos(const sgl_tokenizer *tok);
/* True for ids that end generation: eos, plus whichever of <|im_end|>,
 * <|eot_id|>, <|endoftext|>, </s>, <|end|>, <|eom_id|>, <end_of_turn> the
 * vocabulary has. For SmolLM2: 0 <|endoftext|> and 2 <|im_end|>. */
bool tok_is_eog(const sgl_tokenizer *tok, int32_t id);
/* Ids for which tok_is_eog is true, in increasing order; *n set to the count.
 * The array is owned by the tokenizer. */
const int32_t *tok_eog_ids(const sgl_tokenizer *tok, size_t *n);
/* tok_type of id (TOK_TYPE_UNDEFINED when out of range). */
int tok_token_type(const sgl_tokenizer *tok, int32_t id);
/* True for CONTROL tokens (what skip_special drops when decoding). */
bool tok_is_special(const sgl_tokenizer *tok, int32_t id);
/* The raw bytes the token stands for (byte-level / "▁" / <0xXX> decoded;
 * control tokens give their text, e.g. "<|im_end|>"). Not NUL-terminated in
 * general (may contain any byte); *len receives the length. Owned by the
 * tokenizer. NULL (and *len = 0) when id is out of range. */
const char *tok_piece(const sgl_tokenizer *tok, int32_t id, size_t *len);
/* The token's text exactly as stored in the vocabulary ("Ġthe", "▁the",
 * "<0x0A>"), NUL-terminated, owned by the tokenizer; NULL when out of range. */
const char *tok_text(const sgl_tokenizer *tok, int32_t id);
/* Longest tok_piece length over the vocabulary. */
size_t tok_max_piece_len(const sgl_tokenizer *tok);
/* Id of the token whose vocabulary text (tok_text) equals piece exactly, or
 * -1. ("<|im_end|>" -> 2; for byte-level vocabularies a space is "Ġ".) */
int32_t tok_find(const sgl_tokenizer *tok, const char *piece);
/* "gpt2" / "llama" and the pre-tokenizer name ("smollm", "gpt2", ...). */
const char *tok_model_kind(const sgl_tokenizer *tok);
const char *tok_pre_kind(const sgl_tokenizer *tok);

/* ---- decoding ------------------------------------------------------------ */

/* Appends the bytes of ids to out (exact concatenation of tok_piece, so
 * decode(encode(x)) == x for every x the vocabulary can represent; no UTF-8
 * repair; a SentencePiece space prefix shows as a leading " "). skip_special drops
 * CONTROL tokens. Returns 0, or -1 when memory runs out or an id is out of
 * range. */
int tok_decode(const sgl_tokenizer *tok, const int32_t *ids, size_t n, sgl_strbuf *out,
               bool skip_special);

/* Streaming decoder: turns ids, one at a time, into text that is always
 * valid UTF-8. Complete sequences are emitted as soon as they are whole; an
 * incomplete tail is held back until later tokens complete it; bytes that
 * cannot start or continue a valid sequence come out as U+FFFD (EF BF BD),
 * one per maximal invalid subpart (as Python's errors="replace" does).
 * Zero-initialise or tok_stream_init; no heap memory, nothing to free. */
typedef struct tok_stream {
    uint8_t pend[4];   /* held-back start of an incomplete UTF-8 sequence */
    uint8_t n_pend;
    bool skip_special; /* drop CONTROL tokens (default false) */
} tok_stream;

void tok_stream_init(tok_stream *s, bool skip_special);
/* Output bound: out must hold at least this many bytes for one feed/flush
 * (3 * (tok_max_piece_len + 4)). */
size_t tok_stream_cap(const sgl_tokenizer *tok);
/* Feeds one id; writes the newly completed text to out and returns its
 * length (0 when everything is held back). out is not NUL-terminated.
 * Out-of-range ids produce nothing. cap must be >= tok_stream_cap(tok); if
 * it is smaller, output that does not fit is dropped. */
size_t tok_stream_feed(tok_stream *s, const sgl_tokenizer *tok, int32_t id, char *out,
                       size_t cap);
/* Emits whatever is still held back (as U+FFFD) and resets the state.
 * Returns the number of bytes written (at most 12). */
size_t tok_stream_flush(tok_stream *s, char *out, size_t cap);

#endif
