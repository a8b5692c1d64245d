/* unicode: UTF-8 decoding and the code point classes the tokenizer's
 * pre-tokenizers need (\p{L}, \p{N}, \p{M}, \s). The class table is generated
 * by scripts/gen_unicode_tables.py into runtime/unicode_tables.c.
 */
#ifndef SGL_UNICODE_H
#define SGL_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Class bits (a code point has at most one of L/N/M; SPACE is independent). */
enum {
    UNI_LETTER = 1, /* general category L* */
    UNI_NUMBER = 2, /* N* */
    UNI_MARK = 4,   /* M* */
    UNI_SPACE = 8,  /* White_Space property */
};

typedef struct uni_range {
    uint32_t first, last;
    uint8_t flags;
} uni_range;

/* Generated tables (unicode_tables.c): ASCII by index, then sorted disjoint
 * ranges of code points >= 128 with non-zero flags. */
extern const uint8_t uni_ascii_class[128];
extern const uni_range uni_ranges[];
extern const size_t uni_n_ranges;
extern const char uni_table_version[];

/* UNI_* bits of code point cp (0 for unassigned / other / invalid). */
unsigned uni_class(uint32_t cp);

/* Sentinel code point for a byte that does not start a valid sequence. */
#define UNI_INVALID 0xFFFFFFFFu

/* Decodes the UTF-8 sequence at s[0..n) (n >= 1). Returns its length in
 * bytes (1..4) and stores the code point in *cp; an invalid or truncated
 * sequence (overlong forms, surrogates, > U+10FFFF) yields length 1 and
 * *cp = UNI_INVALID. */
size_t uni_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Encodes cp (<= 0x10FFFF) into out (4 bytes room). Returns the length. */
size_t uni_encode(uint32_t cp, char *out);

/* Length of the longest prefix of s[0..n) that is a valid start of a UTF-8
 * sequence but incomplete (0 if s[0..n) could not be continued into a valid
 * sequence, or is already complete). Used by the streaming decoder. */
size_t uni_valid_prefix_len(const uint8_t *s, size_t n);

#endif
