/* regex.c: syntax check for the regex dialect that constrained decoding
 * supports (gen(regex=...), regex_match). The dialect, documented in
 * docs/language.md, is deliberately small so it maps onto a DFA:
 *   literals; '.'; classes [abc] [^a-z] with escapes; \d \w \s \D \W \S;
 *   \n \t \r \f \v and escaped punctuation; groups (...) and (?:...);
 *   alternation |; quantifiers ? * + {m} {m,} {m,n} (m <= n <= 1000);
 *   anchors ^ $.
 * No backreferences, lookaround, lazy or possessive quantifiers. */
#include <string.h>

#include "lang/lang.h"

#define RE_MAX_GROUPS 100
#define RE_MAX_REPEAT 1000

static int fail(size_t *off, const char **msg, size_t at, const char *m) {
    *off = at;
    *msg = m;
    return -1;
}

static bool is_meta(char c) {
    return strchr(".[]{}()*+?|^$\\", c) != NULL && c != 0;
}

/* Checks an escape at p[i] == backslash (same set inside and outside classes).
 * Returns bytes consumed, or 0 with off and msg set. */
static size_t check_escape(const char *p, size_t n, size_t i, size_t *off, const char **msg) {
    if (i + 1 >= n) {
        fail(off, msg, i, "trailing backslash");
        return 0;
    }
    char c = p[i + 1];
    if (strchr("dwsDWSntrfv", c) && c) return 2;
    if ((c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
        (c >= 0x7B && c <= 0x7E))
        return 2; /* escaped punctuation */
    fail(off, msg, i, "unknown escape (supported: \\d \\w \\s \\D \\W \\S \\n \\t \\r \\f \\v and escaped punctuation)");
    return 0;
}

/* Reads a class at p[i] == '['. Returns bytes consumed or 0 on error. */
static size_t check_class(const char *p, size_t n, size_t i, size_t *off, const char **msg) {
    size_t start = i++;
    if (i < n && p[i] == '^') i++;
    bool empty = true;
    int prev = -1; /* last single char, for ranges; -1 none */
    while (i < n && p[i] != ']') {
        int cur;
        size_t at = i;
        if (p[i] == '\\') {
            size_t k = check_escape(p, n, i, off, msg);
            if (!k) return 0;
            cur = strchr("dwsDWS", p[i + 1]) ? -1 : (unsigned char)p[i + 1];
            i += k;
        } else if (p[i] == '[') {
            fail(off, msg, i, "'[' inside a class must be escaped");
            return 0;
        } else {
            cur = (unsigned char)p[i];
            i++;
        }
        empty = false;
        if (i + 1 < n && p[i] == '-' && p[i + 1] != ']') {
            /* range cur-hi */
            size_t hi_at = i + 1;
            int hi;
            if (p[hi_at] == '\\') {
                size_t k = check_escape(p, n, hi_at, off, msg);
                if (!k) return 0;
                if (strchr("dwsDWS", p[hi_at + 1])) {
                    fail(off, msg, hi_at, "a class shorthand cannot end a range");
                    return 0;
                }
                hi = (unsigned char)p[hi_at + 1];
                i = hi_at + k;
            } else {
                hi = (unsigned char)p[hi_at];
                i = hi_at + 1;
            }
            if (cur < 0) {
                fail(off, msg, at, "a class shorthand cannot start a range");
                return 0;
            }
            if (hi < cur) {
                fail(off, msg, at, "range out of order (the first character is greater than the second)");
                return 0;
            }
            prev = -1;
            continue;
        }
        prev = cur;
    }
    (void)prev;
    if (i >= n) {
        fail(off, msg, start, "unterminated character class (missing ']')");
        return 0;
    }
    if (empty) {
        fail(off, msg, start, "empty character class");
        return 0;
    }
    return i + 1 - start;
}

static bool read_int(const char *p, size_t n, size_t *i, long *v) {
    if (*i >= n || p[*i] < '0' || p[*i] > '9') return false;
    long x = 0;
    while (*i < n && p[*i] >= '0' && p[*i] <= '9') {
        if (x < 100000) x = x * 10 + (p[*i] - '0');
        (*i)++;
    }
    *v = x;
    return true;
}

int sgl_regex_check(const char *p, size_t n, size_t *off, const char **msg) {
    size_t groups[RE_MAX_GROUPS];
    int depth = 0;
    bool can_repeat = false;  /* the previous item is an atom that may take a quantifier */
    bool just_repeated = false;
    for (size_t i = 0; i < n;) {
        char c = p[i];
        switch (c) {
        case '\\': {
            size_t k = check_escape(p, n, i, off, msg);
            if (!k) return -1;
            i += k;
            can_repeat = true;
            just_repeated = false;
            break;
        }
        case '[': {
            size_t k = check_class(p, n, i, off, msg);
            if (!k) return -1;
            i += k;
            can_repeat = true;
            just_repeated = false;
            break;
        }
        case ']':
            return fail(off, msg, i, "unmatched ']' (escape it as \\])");
        case '}':
            return fail(off, msg, i, "unmatched '}' (escape it as \\})");
        case '(':
            if (depth >= RE_MAX_GROUPS) return fail(off, msg, i, "groups nested too deeply");
            groups[depth++] = i;
            if (i + 1 < n && p[i + 1] == '?') {
                if (i + 2 < n && p[i + 2] == ':')
                    i += 3;
                else
                    return fail(off, msg, i, "unsupported group syntax (only (...) and (?:...))");
            } else {
                i++;
            }
            can_repeat = false;
            just_repeated = false;
            break;
        case ')':
            if (depth == 0) return fail(off, msg, i, "unmatched ')'");
            depth--;
            i++;
            can_repeat = true;
            just_repeated = false;
            break;
        case '|':
        case '^':
            i++;
            can_repeat = false;
            just_repeated = false;
            break;
        case '$':
            i++;
            can_repeat = false;
            just_repeated = false;
            break;
        case '*':
        case '+':
        case '?':
            if (just_repeated) {
                if (c == '?') return fail(off, msg, i, "lazy quantifiers are not supported");
                return fail(off, msg, i, "multiple quantifiers in a row (use a group)");
            }
            if (!can_repeat) return fail(off, msg, i, "nothing to repeat");
            i++;
            just_repeated = true;
            break;
        case '{': {
            if (just_repeated) return fail(off, msg, i, "multiple quantifiers in a row (use a group)");
            if (!can_repeat) return fail(off, msg, i, "nothing to repeat");
            size_t at = i++;
            long lo, hi;
            if (!read_int(p, n, &i, &lo))
                return fail(off, msg, at, "invalid repetition (expected {m}, {m,} or {m,n}; write \\{ for a brace)");
            hi = lo;
            if (i < n && p[i] == ',') {
                i++;
                if (i < n && p[i] == '}')
                    hi = -1;
                else if (!read_int(p, n, &i, &hi))
                    return fail(off, msg, at, "invalid repetition (expected {m}, {m,} or {m,n})");
            }
            if (i >= n || p[i] != '}')
                return fail(off, msg, at, "invalid repetition (missing '}')");
            i++;
            if (lo > RE_MAX_REPEAT || hi > RE_MAX_REPEAT) return fail(off, msg, at, "repetition count above 1000");
            if (hi >= 0 && hi < lo) return fail(off, msg, at, "repetition {m,n} with m greater than n");
            just_repeated = true;
            break;
        }
        default:
            (void)is_meta;
            i++;
            can_repeat = true;
            just_repeated = false;
            break;
        }
    }
    if (depth > 0) return fail(off, msg, groups[depth - 1], "unterminated group (missing ')')");
    return 0;
}
