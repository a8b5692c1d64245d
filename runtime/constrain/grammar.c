/* grammar.c: EBNF / GBNF grammar text -> rules of a cons_grammar.
 *
 *   grammar  := rule*                      rule := NAME "::=" alts
 *   alts     := seq ("|" seq)*             seq  := (atom quant?)*
 *   atom     := "literal" | 'literal' | [class] | [^class] | . | NAME | "(" alts ")"
 *   quant    := ? | * | + | {m} | {m,} | {m,n}      (m <= n <= 1000)
 *   comments run from # to the end of the line.
 * A rule's body runs until the next `NAME ::=` (so alternatives and
 * sequences may span lines). Literals and classes take the escapes \n \t \r
 * \\ \" \' \] \[ \- \^ \xHH \uHHHH \UHHHHHHHH; text is UTF-8. The start rule
 * is "root", else the first rule. Errors carry the byte offset (turned into
 * line:col by the caller): syntax errors, undefined and duplicate rules.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

#define G_MAX_DEPTH 200
#define G_MAX_REPEAT 1000

typedef struct gp {
    cons_grammar *g;
    const uint8_t *p;
    size_t n, i;
    cons_diag *d;
    int depth;
    bool failed;
} gp;

static int gfail(gp *s, size_t at, const char *msg, const char *arg) {
    if (!s->failed) cons_diag_set(s->d, (int32_t)at, msg, arg);
    s->failed = true;
    return -1;
}

static bool is_name(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static void skip_space(gp *s) {
    while (s->i < s->n) {
        uint8_t c = s->p[s->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            s->i++;
        } else if (c == '#') {
            while (s->i < s->n && s->p[s->i] != '\n') s->i++;
        } else {
            break;
        }
    }
}

/* At a rule head `NAME ::=`? (name length in *len) */
static bool at_rule_head(gp *s, size_t *len) {
    size_t j = s->i;
    while (j < s->n && is_name(s->p[j])) j++;
    if (j == s->i) return false;
    *len = j - s->i;
    while (j < s->n && (s->p[j] == ' ' || s->p[j] == '\t' || s->p[j] == '\n' || s->p[j] == '\r')) j++;
    return j + 3 <= s->n && memcmp(s->p + j, "::=", 3) == 0;
}

static int hexv(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class at s->i: returns its code point or -1. */
static int32_t read_char(gp *s) {
    size_t at = s->i;
    uint8_t c = s->p[s->i];
    if (c == '\\') {
        if (s->i + 1 >= s->n) return gfail(s, at, "%s", "trailing backslash");
        uint8_t e = s->p[s->i + 1];
        s->i += 2;
        switch (e) {
        case 'n': return '\n';
        case 't': return '\t';
        case 'r': return '\r';
        case 'f': return '\f';
        case 'v': return '\v';
        case '0': return 0;
        case '\\':
        case '"':
        case '\'':
        case ']':
        case '[':
        case '-':
        case '^':
        case '/':
        case '.': return e;
        case 'x':
        case 'u':
        case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0;
            for (int k = 0; k < nd; k++) {
                int h = s->i < s->n ? hexv(s->p[s->i]) : -1;
                if (h < 0) return gfail(s, at, "%s", "bad hex escape");
                v = v * 16 + (uint32_t)h;
                s->i++;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return gfail(s, at, "%s", "escape names no Unicode character");
            return (int32_t)v;
        }
        default: return gfail(s, at, "%s", "unknown escape");
        }
    }
    /* UTF-8 */
    int len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (!len || s->i + (size_t)len > s->n) return gfail(s, at, "%s", "invalid UTF-8");
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int k = 1; k < len; k++) {
        uint8_t b = s->p[s->i + (size_t)k];
        if ((b & 0xC0) != 0x80) return gfail(s, at, "%s", "invalid UTF-8");
        v = (v << 6) | (b & 0x3Fu);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10FFFF)) || (v >= 0xD800 && v <= 0xDFFF))
        return gfail(s, at, "%s", "invalid UTF-8");
    s->i += (size_t)len;
    return (int32_t)v;
}

static cn *parse_literal(gp *s) {
    size_t at = s->i;
    uint8_t q = s->p[s->i++];
    sgl_strbuf b = {0};
    while (s->i < s->n && s->p[s->i] != q) {
        if (s->p[s->i] == '\n') break;
        int32_t c = read_char(s);
        if (c < 0) {
            sgl_strbuf_free(&b);
            return NULL;
        }
        uint8_t u[4];
        sgl_strbuf_append(&b, (const char *)u, (size_t)cn_utf8_encode((uint32_t)c, u));
    }
    if (s->i >= s->n || s->p[s->i] != q) {
        sgl_strbuf_free(&b);
        gfail(s, at, "%s", "unterminated string literal");
        return NULL;
    }
    s->i++;
    cn *x = cn_lit(s->g, b.data ? b.data : "", b.len);
    sgl_strbuf_free(&b);
    return x;
}

static cn *parse_class(gp *s) {
    size_t at = s->i++;
    bool neg = false;
    cp_ranges r = {0};
    cn *x = NULL;
    if (s->i < s->n && s->p[s->i] == '^') {
        neg = true;
        s->i++;
    }
    while (s->i < s->n && s->p[s->i] != ']') {
        int32_t lo = read_char(s);
        if (lo < 0) goto out;
        int32_t hi = lo;
        if (s->i + 1 < s->n && s->p[s->i] == '-' && s->p[s->i + 1] != ']') {
            s->i++;
            hi = read_char(s);
            if (hi < 0) goto out;
            if (hi < lo) {
                gfail(s, at, "%s", "character range out of order");
                goto out;
            }
        }
        if (cpr_add(&r, (uint32_t)lo, (uint32_t)hi)) {
            gfail(s, at, "%s", "out of memory");
            goto out;
        }
    }
    if (s->i >= s->n) {
        gfail(s, at, "%s", "unterminated character class (missing ']')");
        goto out;
    }
    s->i++;
    if (neg && cpr_negate(&r)) {
        gfail(s, at, "%s", "out of memory");
        goto out;
    }
    cpr_normalize(&r);
    if (r.n == 0) {
        gfail(s, at, "%s", "character class matches nothing");
        goto out;
    }
    x = cn_codepoints(s->g, r.lo, r.hi, r.n);
out:
    cpr_free(&r);
    return x;
}

static cn *parse_alts(gp *s);

static cn *parse_atom(gp *s) {
    size_t at = s->i;
    uint8_t c = s->p[s->i];
    if (c == '"' || c == '\'') return parse_literal(s);
    if (c == '[') return parse_class(s);
    if (c == '.') {
        s->i++;
        uint32_t lo = 0, hi = 0x10FFFF;
        return cn_codepoints(s->g, &lo, &hi, 1);
    }
    if (c == '(') {
        if (s->depth >= G_MAX_DEPTH) {
            gfail(s, at, "%s", "groups nested too deeply");
            return NULL;
        }
        s->i++;
        s->depth++;
        cn *x = parse_alts(s);
        s->depth--;
        if (!x) return NULL;
        skip_space(s);
        if (s->i >= s->n || s->p[s->i] != ')') {
            gfail(s, at, "%s", "expected ')' to close '('");
            return NULL;
        }
        s->i++;
        return x;
    }
    if (is_name(c)) {
        size_t j = s->i;
        while (j < s->n && is_name(s->p[j])) j++;
        int32_t r = cg_rule_add(s->g, (const char *)s->p + s->i, j - s->i, (int32_t)at);
        s->i = j;
        if (r < 0) {
            gfail(s, at, "%s", "out of memory");
            return NULL;
        }
        cn *x = cn_ref(s->g, r);
        if (x) x->off = (int32_t)at;
        return x;
    }
    gfail(s, at, "%s", "expected a string, a character class, a rule name or '('");
    return NULL;
}

static bool read_int(gp *s, long *v) {
    if (s->i >= s->n || s->p[s->i] < '0' || s->p[s->i] > '9') return false;
    long x = 0;
    while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9') {
        if (x < 100000) x = x * 10 + (s->p[s->i] - '0');
        s->i++;
    }
    *v = x;
    return true;
}

/* Appends x to the growing list *v; false (diagnosed) when out of memory. */
static bool push_node(gp *s, cn ***v, int32_t *n, int32_t *cap, cn *x) {
    if (*n == *cap) {
        int32_t nc = *cap ? *cap * 2 : 8;
        cn **nv = realloc(*v, sizeof *nv * (size_t)nc);
        if (!nv) {
            gfail(s, s->i, "%s", "out of memory");
            return false;
        }
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return true;
}

static cn *parse_seq(gp *s) {
    cn **v = NULL;
    int32_t n = 0, cap = 0;
    cn *res = NULL;
    for (;;) {
        skip_space(s);
        if (s->i >= s->n) break;
        uint8_t c = s->p[s->i];
        size_t hl;
        if (c == '|' || c == ')') break;
        if (s->depth == 0 && at_rule_head(s, &hl)) break;
        cn *x = parse_atom(s);
        if (!x) goto out;
        if (s->i < s->n) {
            size_t at = s->i;
            uint8_t q = s->p[s->i];
            long lo = -2, hi = -1;
            if (q == '?') lo = 0, hi = 1;
            else if (q == '*') lo = 0, hi = -1;
            else if (q == '+') lo = 1, hi = -1;
            if (lo != -2) {
                s->i++;
                x = cn_rep(s->g, x, (int32_t)lo, (int32_t)hi);
            } else if (q == '{') {
                s->i++;
                skip_space(s);
                if (!read_int(s, &lo)) {
                    gfail(s, at, "%s", "invalid repetition (expected {m}, {m,} or {m,n})");
                    goto out;
                }
                hi = lo;
                skip_space(s);
                if (s->i < s->n && s->p[s->i] == ',') {
                    s->i++;
                    skip_space(s);
                    hi = -1;
                    if (s->i < s->n && s->p[s->i] != '}' && !read_int(s, &hi)) {
                        gfail(s, at, "%s", "invalid repetition (expected {m}, {m,} or {m,n})");
                        goto out;
                    }
                    skip_space(s);
                }
                if (s->i >= s->n || s->p[s->i] != '}') {
                    gfail(s, at, "%s", "invalid repetition (missing '}')");
                    goto out;
                }
                s->i++;
                if (lo > G_MAX_REPEAT || hi > G_MAX_REPEAT) {
                    gfail(s, at, "%s", "repetition count above 1000");
                    goto out;
                }
                if (hi >= 0 && hi < lo) {
                    gfail(s, at, "%s", "repetition {m,n} with m greater than n");
                    goto out;
                }
                x = cn_rep(s->g, x, (int32_t)lo, (int32_t)hi);
            }
            if (s->i < s->n && strchr("?*+{", s->p[s->i]) && s->p[s->i] && (lo != -2 || q == '{')) {
                gfail(s, s->i, "%s", "multiple quantifiers in a row (use a group)");
                goto out;
            }
        }
        if (!x) {
            gfail(s, s->i, "%s", "out of memory");
            goto out;
        }
        if (!push_node(s, &v, &n, &cap, x)) goto out;
    }
    res = cn_cat(s->g, v, n);
    if (!res) gfail(s, s->i, "%s", "out of memory");
out:
    free(v);
    return s->failed ? NULL : res;
}

static cn *parse_alts(gp *s) {
    cn **v = NULL;
    int32_t n = 0, cap = 0;
    cn *res = NULL;
    for (;;) {
        cn *x = parse_seq(s);
        if (!x) goto out;
        if (!push_node(s, &v, &n, &cap, x)) goto out;
        skip_space(s);
        if (s->i < s->n && s->p[s->i] == '|') {
            s->i++;
            continue;
        }
        break;
    }
    res = cn_alt(s->g, v, n);
    if (!res) gfail(s, s->i, "%s", "out of memory");
out:
    free(v);
    return s->failed ? NULL : res;
}

int cons_gbnf_parse(cons_grammar *g, const char *text, size_t len, cons_diag *diag) {
    gp s = {.g = g, .p = (const uint8_t *)(text ? text : ""), .n = text ? len : 0, .d = diag};
    int32_t first = -1;
    for (;;) {
        skip_space(&s);
        if (s.i >= s.n) break;
        size_t at = s.i, nl;
        if (!at_rule_head(&s, &nl)) {
            gfail(&s, at, "%s", is_name(s.p[at]) ? "expected '::=' after the rule name" : "expected a rule (name ::= ...)");
            return -1;
        }
        int32_t r = cg_rule_add(g, (const char *)s.p + at, nl, (int32_t)at);
        if (r < 0) return gfail(&s, at, "%s", "out of memory");
        if (g->rules[r].body) return gfail(&s, at, "rule '%s' is defined twice", g->rules[r].name);
        s.i = at + nl;
        skip_space(&s);
        s.i += 3; /* ::= */
        cn *body = parse_alts(&s);
        if (!body) return -1;
        skip_space(&s);
        if (s.i < s.n && s.p[s.i] == ')') return gfail(&s, s.i, "%s", "unmatched ')'");
        g->rules[r].body = body;
        g->rules[r].off = (int32_t)at;
        if (first < 0) first = r;
    }
    if (first < 0) return gfail(&s, 0, "%s", "the grammar has no rules");
    for (int32_t r = 0; r < g->n_rules; r++)
        if (!g->rules[r].body) return gfail(&s, (size_t)g->rules[r].off, "undefined rule '%s'", g->rules[r].name);
    g->start = first;
    for (int32_t r = 0; r < g->n_rules; r++)
        if (strcmp(g->rules[r].name, "root") == 0) g->start = r;
    return 0;
}
