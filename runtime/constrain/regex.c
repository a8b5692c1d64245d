/* regex.c: the regex dialect of docs/language.md §10 parsed into cn trees.
 *
 * Literals are UTF-8 (a multi-byte character is one atom); classes, '.', and
 * the shorthands are sets of code points compiled to UTF-8 byte sequences
 * (\d \w \s are ASCII). Additions to §10: \xHH and \uHHHH escapes. The
 * whole text must match (implicit anchors); ^ and $ are assertions.
 * Embedded mode (JSON-schema "pattern") matches the characters of a JSON
 * string: a leading ^ / trailing $ are dropped and characters that JSON
 * would have to escape are left out of classes (an error as literals). */
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

#define RE_MAX_DEPTH 100
#define RE_MAX_REPEAT 1000

typedef struct rp {
    cons_grammar *g;
    const uint8_t *p;
    size_t n, i;
    bool emb;
    cons_diag *d;
    int depth;
    bool failed;
} rp;

static cn *fail(rp *r, size_t at, const char *msg) {
    if (!r->failed) cons_diag_set(r->d, (int32_t)at, "%s", msg);
    r->failed = true;
    return NULL;
}

static bool json_plain(uint32_t c) { return c >= 0x20 && c != '"' && c != '\\'; }

/* Keeps only code points a JSON string holds unescaped. */
static int restrict_json(cp_ranges *r) {
    cp_ranges o = {0};
    static const uint32_t al[3] = {0x20, 0x23, 0x5D}, ah[3] = {0x21, 0x5B, 0x10FFFF};
    cpr_normalize(r);
    for (int32_t i = 0; i < r->n; i++)
        for (int k = 0; k < 3; k++) {
            uint32_t lo = r->lo[i] > al[k] ? r->lo[i] : al[k];
            uint32_t hi = r->hi[i] < ah[k] ? r->hi[i] : ah[k];
            if (lo <= hi && cpr_add(&o, lo, hi)) {
                cpr_free(&o);
                return -1;
            }
        }
    cpr_free(r);
    *r = o;
    return 0;
}

static cn *from_ranges(rp *r, cp_ranges *cr, size_t at) {
    if (r->emb && restrict_json(cr)) {
        r->g->oom = 1;
        return NULL;
    }
    cpr_normalize(cr);
    if (cr->n == 0) return fail(r, at, "character class matches nothing");
    cn *x = cn_codepoints(r->g, cr->lo, cr->hi, cr->n);
    if (!x) r->failed = true;
    return x;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Adds a shorthand's ranges (\d \w \s and complements). */
static int add_shorthand(cp_ranges *cr, uint8_t c) {
    cp_ranges t = {0};
    int rc = 0;
    switch (c | 0x20) {
    case 'd': rc = cpr_add(&t, '0', '9'); break;
    case 'w':
        rc = cpr_add(&t, '0', '9') || cpr_add(&t, 'A', 'Z') || cpr_add(&t, '_', '_') ||
             cpr_add(&t, 'a', 'z');
        break;
    default: rc = cpr_add(&t, 0x09, 0x0D) || cpr_add(&t, ' ', ' '); break;
    }
    if (!rc && c >= 'A' && c <= 'Z') rc = cpr_negate(&t);
    for (int32_t i = 0; !rc && i < t.n; i++) rc = cpr_add(cr, t.lo[i], t.hi[i]);
    cpr_free(&t);
    return rc;
}

/* Reads an escape at p[i] == '\\'. Returns the code point, -2 for a
 * shorthand (*sh set to its letter), or -1 on error (diag set). */
static int32_t read_escape(rp *r, uint8_t *sh) {
    size_t at = r->i;
    if (r->i + 1 >= r->n) {
        fail(r, at, "trailing backslash");
        return -1;
    }
    uint8_t c = r->p[r->i + 1];
    r->i += 2;
    if (c && strchr("dwsDWS", c)) {
        *sh = c;
        return -2;
    }
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case 'x':
    case 'u': {
        int nd = c == 'x' ? 2 : 4;
        uint32_t v = 0;
        for (int k = 0; k < nd; k++) {
            int h = r->i < r->n ? hexval(r->p[r->i]) : -1;
            if (h < 0) {
                fail(r, at, c == 'x' ? "\\x needs two hex digits" : "\\u needs four hex digits");
                return -1;
            }
            v = v * 16 + (uint32_t)h;
            r->i++;
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            fail(r, at, "\\u names a surrogate, which is not a character");
            return -1;
        }
        return (int32_t)v;
    }
    default:
        break;
    }
    if ((c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
        (c >= 0x7B && c <= 0x7E))
        return c;
    fail(r, at, "unknown escape (supported: \\d \\w \\s \\D \\W \\S \\n \\t \\r \\f \\v \\xHH \\uHHHH and escaped punctuation)");
    return -1;
}

/* Decodes one UTF-8 character at p[i]; returns it (i advanced) or -1. */
static int32_t read_utf8(rp *r) {
    const uint8_t *p = r->p;
    size_t i = r->i;
    uint8_t c = p[i];
    int n;
    uint32_t v;
    if (c < 0x80) {
        r->i++;
        return c;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07;
    } else {
        fail(r, i, "invalid UTF-8 in the pattern");
        return -1;
    }
    if (i + (size_t)n > r->n) {
        fail(r, i, "invalid UTF-8 in the pattern");
        return -1;
    }
    for (int k = 1; k < n; k++) {
        if ((p[i + k] & 0xC0) != 0x80) {
            fail(r, i, "invalid UTF-8 in the pattern");
            return -1;
        }
        v = (v << 6) | (p[i + k] & 0x3F);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10FFFF)) ||
        (v >= 0xD800 && v <= 0xDFFF)) {
        fail(r, i, "invalid UTF-8 in the pattern");
        return -1;
    }
    r->i += (size_t)n;
    return (int32_t)v;
}

static cn *parse_class(rp *r) {
    size_t start = r->i++;
    bool neg = false;
    cp_ranges cr = {0};
    if (r->i < r->n && r->p[r->i] == '^') {
        neg = true;
        r->i++;
    }
    bool empty = true;
    while (r->i < r->n && r->p[r->i] != ']') {
        size_t at = r->i;
        int32_t lo;
        uint8_t sh = 0;
        if (r->p[r->i] == '\\') {
            lo = read_escape(r, &sh);
            if (lo == -1) goto err;
        } else if (r->p[r->i] == '[') {
            fail(r, r->i, "'[' inside a class must be escaped");
            goto err;
        } else {
            lo = read_utf8(r);
            if (lo < 0) goto err;
        }
        empty = false;
        if (r->i + 1 < r->n && r->p[r->i] == '-' && r->p[r->i + 1] != ']') {
            size_t hi_at = ++r->i;
            int32_t hi;
            if (r->p[r->i] == '\\') {
                uint8_t sh2 = 0;
                hi = read_escape(r, &sh2);
                if (hi == -1) goto err;
                if (hi == -2) {
                    fail(r, hi_at, "a class shorthand cannot end a range");
                    goto err;
                }
            } else if (r->p[r->i] == '[') {
                fail(r, r->i, "'[' inside a class must be escaped");
                goto err;
            } else {
                hi = read_utf8(r);
                if (hi < 0) goto err;
            }
            if (lo == -2) {
                fail(r, at, "a class shorthand cannot start a range");
                goto err;
            }
            if (hi < lo) {
                fail(r, at, "range out of order (the first character is greater than the second)");
                goto err;
            }
            if (cpr_add(&cr, (uint32_t)lo, (uint32_t)hi)) goto oom;
            continue;
        }
        if (lo == -2) {
            if (add_shorthand(&cr, sh)) goto oom;
        } else if (cpr_add(&cr, (uint32_t)lo, (uint32_t)lo)) {
            goto oom;
        }
    }
    if (r->i >= r->n) {
        fail(r, start, "unterminated character class (missing ']')");
        goto err;
    }
    if (empty) {
        fail(r, start, "empty character class");
        goto err;
    }
    r->i++;
    if (neg && cpr_negate(&cr)) goto oom;
    cn *x = from_ranges(r, &cr, start);
    cpr_free(&cr);
    return x;
oom:
    r->g->oom = 1;
    fail(r, start, "out of memory");
err:
    cpr_free(&cr);
    return NULL;
}

static cn *parse_alt(rp *r);

static bool read_int(rp *r, long *v) {
    if (r->i >= r->n || r->p[r->i] < '0' || r->p[r->i] > '9') return false;
    long x = 0;
    while (r->i < r->n && r->p[r->i] >= '0' && r->p[r->i] <= '9') {
        if (x < 100000) x = x * 10 + (r->p[r->i] - '0');
        r->i++;
    }
    *v = x;
    return true;
}

/* One atom (NULL + *anchor for ^ / $ that take no quantifier). */
static cn *parse_atom(rp *r, bool *repeatable) {
    size_t at = r->i;
    uint8_t c = r->p[r->i];
    *repeatable = true;
    switch (c) {
    case '(': {
        if (r->depth >= RE_MAX_DEPTH) return fail(r, at, "groups nested too deeply");
        r->i++;
        if (r->i < r->n && r->p[r->i] == '?') {
            if (r->i + 1 < r->n && r->p[r->i + 1] == ':')
                r->i += 2;
            else
                return fail(r, at, "unsupported group syntax (only (...) and (?:...))");
        }
        r->depth++;
        cn *x = parse_alt(r);
        r->depth--;
        if (!x) return NULL;
        if (r->i >= r->n || r->p[r->i] != ')') return fail(r, at, "unterminated group (missing ')')");
        r->i++;
        return x;
    }
    case '[': return parse_class(r);
    case ']': return fail(r, at, "unmatched ']' (escape it as \\])");
    case '}': return fail(r, at, "unmatched '}' (escape it as \\})");
    case '{': return fail(r, at, "nothing to repeat");
    case '*':
    case '+':
    case '?': return fail(r, at, "nothing to repeat");
    case '^':
    case '$':
        r->i++;
        *repeatable = false;
        if (r->emb) {
            if ((c == '^' && at == 0) || (c == '$' && at + 1 == r->n)) return cn_empty(r->g);
            return fail(r, at, "anchors inside a pattern are supported only at its start (^) and end ($)");
        }
        return cn_anchor(r->g, c == '^' ? CN_BOL : CN_EOL);
    case '.': {
        r->i++;
        cp_ranges cr = {0};
        if (cpr_add(&cr, 0, 9) || cpr_add(&cr, 11, 0x10FFFF)) {
            cpr_free(&cr);
            r->g->oom = 1;
            return fail(r, at, "out of memory");
        }
        cn *x = from_ranges(r, &cr, at);
        cpr_free(&cr);
        return x;
    }
    case '\\': {
        uint8_t sh = 0;
        int32_t v = read_escape(r, &sh);
        if (v == -1) return NULL;
        cp_ranges cr = {0};
        int rc = v == -2 ? add_shorthand(&cr, sh) : cpr_add(&cr, (uint32_t)v, (uint32_t)v);
        if (rc) {
            cpr_free(&cr);
            r->g->oom = 1;
            return fail(r, at, "out of memory");
        }
        if (v >= 0 && r->emb && !json_plain((uint32_t)v)) {
            cpr_free(&cr);
            return fail(r, at, "this character needs escaping inside a JSON string (not supported in a pattern)");
        }
        cn *x = from_ranges(r, &cr, at);
        cpr_free(&cr);
        return x;
    }
    default: {
        int32_t v = read_utf8(r);
        if (v < 0) return NULL;
        if (r->emb && !json_plain((uint32_t)v))
            return fail(r, at, "this character needs escaping inside a JSON string (not supported in a pattern)");
        return cn_lit(r->g, (const char *)r->p + at, r->i - at);
    }
    }
}

/* Appends x to the list *v of n entries (cap of them), which starts in the
 * caller's array stack and moves to the heap when it outgrows it. Returns
 * 0, or -1 with the failure recorded. */
static int push_node(rp *r, cn ***v, cn **stack, int32_t *n, int32_t *cap, cn *x) {
    if (*n == *cap) {
        *cap *= 2;
        cn **nv = malloc(sizeof *nv * (size_t)*cap);
        if (!nv) {
            r->g->oom = 1;
            fail(r, r->i, "out of memory");
            return -1;
        }
        memcpy(nv, *v, sizeof *nv * (size_t)*n);
        if (*v != stack) free(*v);
        *v = nv;
    }
    (*v)[(*n)++] = x;
    return 0;
}

static cn *parse_cat(rp *r) {
    cn *stack[16] = {0};
    cn **items = stack;
    int32_t n = 0, cap = 16;
    cn *res = NULL;
    while (r->i < r->n && r->p[r->i] != '|' && r->p[r->i] != ')') {
        bool repeatable;
        cn *x = parse_atom(r, &repeatable);
        if (!x) goto out;
        for (int q = 0; r->i < r->n; q++) {
            uint8_t c = r->p[r->i];
            if (c != '*' && c != '+' && c != '?' && c != '{') break;
            size_t at = r->i;
            if (q > 0) {
                fail(r, at, c == '?' ? "lazy quantifiers are not supported"
                                     : "multiple quantifiers in a row (use a group)");
                goto out;
            }
            if (!repeatable) {
                fail(r, at, "nothing to repeat");
                goto out;
            }
            long lo = 0, hi = -1;
            r->i++;
            if (c == '+') lo = 1;
            else if (c == '?') hi = 1;
            else if (c == '{') {
                if (!read_int(r, &lo)) {
                    fail(r, at, "invalid repetition (expected {m}, {m,} or {m,n}; write \\{ for a brace)");
                    goto out;
                }
                hi = lo;
                if (r->i < r->n && r->p[r->i] == ',') {
                    r->i++;
                    if (r->i < r->n && r->p[r->i] == '}')
                        hi = -1;
                    else if (!read_int(r, &hi)) {
                        fail(r, at, "invalid repetition (expected {m}, {m,} or {m,n})");
                        goto out;
                    }
                }
                if (r->i >= r->n || r->p[r->i] != '}') {
                    fail(r, at, "invalid repetition (missing '}')");
                    goto out;
                }
                r->i++;
                if (lo > RE_MAX_REPEAT || hi > RE_MAX_REPEAT) {
                    fail(r, at, "repetition count above 1000");
                    goto out;
                }
                if (hi >= 0 && hi < lo) {
                    fail(r, at, "repetition {m,n} with m greater than n");
                    goto out;
                }
            }
            x = cn_rep(r->g, x, (int32_t)lo, (int32_t)hi);
            if (!x) goto out;
        }
        if (push_node(r, &items, stack, &n, &cap, x)) goto out;
    }
    res = cn_cat(r->g, items, n);
    if (!res) fail(r, r->i, "out of memory");
out:
    if (items != stack) free(items);
    return r->failed ? NULL : res;
}

static cn *parse_alt(rp *r) {
    cn *kids[64] = {0};
    cn **v = kids;
    int32_t n = 0, cap = 64;
    cn *res = NULL;
    for (;;) {
        cn *x = parse_cat(r);
        if (!x) goto out;
        if (push_node(r, &v, kids, &n, &cap, x)) goto out;
        if (r->i < r->n && r->p[r->i] == '|') {
            r->i++;
            continue;
        }
        break;
    }
    res = cn_alt(r->g, v, n);
    if (!res) fail(r, r->i, "out of memory");
out:
    if (v != kids) free(v);
    return r->failed ? NULL : res;
}

cn *cons_regex_parse(cons_grammar *g, const char *p, size_t n, bool embedded, cons_diag *diag) {
    rp r = {.g = g, .p = (const uint8_t *)p, .n = n, .emb = embedded, .d = diag};
    cn *x = parse_alt(&r);
    if (x && r.i < n) {
        /* parse_alt stops only at ')' here */
        return fail(&r, r.i, "unmatched ')'");
    }
    return x;
}
