/* schema.c: JSON schema (a draft 2020-12 subset) -> grammar rules.
 *
 * Every schema node becomes a cn tree; each $ref target becomes a rule, so
 * a schema whose references form a cycle is a recursive grammar (Earley) and
 * any other is inlined into one DFA. What is generated always validates:
 *   - objects list their properties in schema order, required ones always,
 *     optional ones possibly absent; no other properties are generated
 *     (additionalProperties true/absent is satisfied by that); with no
 *     "properties" and an additionalProperties schema: a map of such values;
 *   - integers with bounds are exact digit automata; numbers with bounds are
 *     integers in range or decimals whose whole interval fits (no exponent);
 *   - strings count characters (an escape is one); pattern and format are
 *     regexes over the string's characters (no escapes inside them);
 *   - a schema with no type information is any JSON value, nested at most
 *     ANY_DEPTH deep; oneOf is generated as anyOf (see README).
 * Keywords outside the supported set are errors naming the keyword and its
 * JSON pointer; annotations (title, description, ...) are accepted.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

#define ANY_DEPTH 3
#define MAX_DEPTH 64
#define MAX_BOUND 1e15

typedef struct sref {
    char *ptr;
    int32_t rule;
    struct sref *next;
} sref;

typedef struct sctx {
    cons_grammar *g;
    cJSON *root;
    const cons_options *opt;
    cons_diag *d;
    sref *refs;
    int depth;
    bool failed;
} sctx;

static cn *gen(sctx *c, const cJSON *s, const char *ptr);

static cn *err(sctx *c, const char *ptr, const char *fmt, const char *arg) {
    if (!c->failed) {
        cons_diag_set(c->d, -1, fmt, arg);
        snprintf(c->d->pointer, sizeof c->d->pointer, "%s", ptr);
    }
    c->failed = true;
    return NULL;
}

static void child_ptr(char *out, size_t cap, const char *ptr, const char *key) {
    size_t n = (size_t)snprintf(out, cap, "%s/", ptr);
    for (const char *k = key; *k && n + 3 < cap; k++) {
        if (*k == '~') {
            out[n++] = '~';
            out[n++] = '0';
        } else if (*k == '/') {
            out[n++] = '~';
            out[n++] = '1';
        } else {
            out[n++] = *k;
        }
    }
    out[n < cap ? n : cap - 1] = 0;
}

static void index_ptr(char *out, size_t cap, const char *ptr, const char *key, int i) {
    snprintf(out, cap, "%s/%s/%d", ptr, key, i);
}

/* ---- pieces ------------------------------------------------------------------ */

static cn *ws(sctx *c) {
    if (!c->opt->ws_flexible || c->opt->ws_max <= 0) return cn_empty(c->g);
    uint32_t s[8] = {0};
    s[0] = (1u << '\t') | (1u << '\n');
    s[1] = 1u << (' ' - 32);
    return cn_rep(c->g, cn_set(c->g, s), 0, c->opt->ws_max);
}

static cn *re(sctx *c, const char *pattern) {
    cons_diag d;
    cn *x = cons_regex_parse(c->g, pattern, strlen(pattern), true, &d);
    if (!x && !c->failed) {
        c->failed = true;
        cons_diag_set(c->d, -1, "internal pattern failed: %s", d.message);
    }
    return x;
}

/* One character of a JSON string: unescaped or an escape (no surrogates). */
static cn *json_char(sctx *c) {
    uint32_t lo[3] = {0x20, 0x23, 0x5D}, hi[3] = {0x21, 0x5B, 0x10FFFF};
    cn *plain = cn_codepoints(c->g, lo, hi, 3);
    cons_diag d;
    const char *esc = "\\\\([\"\\\\/bfnrt]|u([0-9a-cA-CefEF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))";
    cn *e = cons_regex_parse(c->g, esc, strlen(esc), false, &d);
    return cn_alt2(c->g, plain, e);
}

static cn *json_string(sctx *c, int32_t min, int32_t max) {
    cn *q = cn_byte(c->g, '"');
    return cn_cat3(c->g, q, cn_rep(c->g, json_char(c), min, max), cn_byte(c->g, '"'));
}

static cn *digits(sctx *c, int32_t min, int32_t max) { return cn_rep(c->g, cn_range(c->g, '0', '9'), min, max); }

/* Fixed-length digit strings x..y (same length n, leading zeros allowed). */
static cn *fixed_range(sctx *c, const char *x, const char *y, int n) {
    cons_grammar *g = c->g;
    if (n == 0) return cn_empty(g);
    if (memcmp(x, y, (size_t)n) == 0) return cn_lit(g, x, (size_t)n);
    if (n == 1) return cn_range(g, (uint8_t)x[0], (uint8_t)y[0]);
    if (x[0] == y[0]) return cn_cat2(g, cn_byte(g, (uint8_t)x[0]), fixed_range(c, x + 1, y + 1, n - 1));
    char nines[24], zeros[24];
    memset(nines, '9', sizeof nines);
    memset(zeros, '0', sizeof zeros);
    bool x_low = memcmp(x + 1, zeros, (size_t)n - 1) == 0, y_high = memcmp(y + 1, nines, (size_t)n - 1) == 0;
    cn *alts[3];
    int na = 0;
    char mlo = x_low ? x[0] : (char)(x[0] + 1), mhi = y_high ? y[0] : (char)(y[0] - 1);
    if (!x_low) alts[na++] = cn_cat2(g, cn_byte(g, (uint8_t)x[0]), fixed_range(c, x + 1, nines, n - 1));
    if (mlo <= mhi) alts[na++] = cn_cat2(g, cn_range(g, (uint8_t)mlo, (uint8_t)mhi), digits(c, n - 1, n - 1));
    if (!y_high) alts[na++] = cn_cat2(g, cn_byte(g, (uint8_t)y[0]), fixed_range(c, zeros, y + 1, n - 1));
    return cn_alt(g, alts, na);
}

static int ndigits(int64_t v) {
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Decimal naturals a..b without leading zeros (b < 0: unbounded). */
static cn *nat_range(sctx *c, int64_t a, int64_t b) {
    cons_grammar *g = c->g;
    cn *alts[24];
    int na = 0;
    int da = ndigits(a), db = b < 0 ? da : ndigits(b);
    for (int d = da; d <= db; d++) {
        int64_t p = 1;
        for (int k = 1; k < d; k++) p *= 10;
        int64_t lo = a > (d == 1 ? 0 : p) ? a : (d == 1 ? 0 : p);
        int64_t hi = p * 10 - 1;
        if (b >= 0 && b < hi) hi = b;
        if (lo > hi) continue;
        char x[24], y[24];
        int64_t u = lo, w = hi;
        for (int k = d - 1; k >= 0; k--) {
            x[k] = (char)('0' + u % 10);
            y[k] = (char)('0' + w % 10);
            u /= 10;
            w /= 10;
        }
        alts[na++] = fixed_range(c, x, y, d);
    }
    if (b < 0) /* every longer number */
        alts[na++] = cn_cat2(g, cn_range(g, '1', '9'), digits(c, da, -1));
    if (na == 0) return NULL;
    return cn_alt(g, alts, na);
}

/* Integers lo..hi; has_lo / has_hi false: unbounded on that side. */
static cn *int_range(sctx *c, bool has_lo, int64_t lo, bool has_hi, int64_t hi) {
    cons_grammar *g = c->g;
    cn *alts[2];
    int na = 0;
    if (!has_hi || hi >= 0) {
        int64_t a = has_lo && lo > 0 ? lo : 0;
        cn *x = nat_range(c, a, has_hi ? hi : -1);
        if (x) alts[na++] = x;
    }
    if (!has_lo || lo < 0) {
        int64_t ma = has_hi && hi < 0 ? -hi : 1;
        cn *x = nat_range(c, ma, has_lo ? -lo : -1);
        if (x) alts[na++] = cn_cat2(g, cn_byte(g, '-'), x);
    }
    if (na == 0) return NULL;
    return cn_alt(g, alts, na);
}

static bool get_bound(sctx *c, const cJSON *s, const char *key, const char *ptr, double *v, bool *found) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, key);
    *found = false;
    if (!x) return true;
    char p[256];
    child_ptr(p, sizeof p, ptr, key);
    if (!cJSON_IsNumber(x)) {
        err(c, p, "'%s' must be a number", key);
        return false;
    }
    if (fabs(x->valuedouble) > MAX_BOUND) {
        err(c, p, "'%s' is beyond the supported range (|bound| <= 1e15)", key);
        return false;
    }
    *v = x->valuedouble;
    *found = true;
    return true;
}

/* Integer bounds of s: [*lo, *hi] (flags false: unbounded). */
static bool int_bounds(sctx *c, const cJSON *s, const char *ptr, bool *hl, int64_t *lo, bool *hh, int64_t *hi) {
    double v;
    bool f;
    *hl = *hh = false;
    if (!get_bound(c, s, "minimum", ptr, &v, &f)) return false;
    if (f) {
        *hl = true;
        *lo = (int64_t)ceil(v);
    }
    if (!get_bound(c, s, "exclusiveMinimum", ptr, &v, &f)) return false;
    if (f) {
        int64_t x = (int64_t)floor(v) + 1;
        if (!*hl || x > *lo) *lo = x;
        *hl = true;
    }
    if (!get_bound(c, s, "maximum", ptr, &v, &f)) return false;
    if (f) {
        *hh = true;
        *hi = (int64_t)floor(v);
    }
    if (!get_bound(c, s, "exclusiveMaximum", ptr, &v, &f)) return false;
    if (f) {
        int64_t x = (int64_t)ceil(v) - 1;
        if (!*hh || x < *hi) *hi = x;
        *hh = true;
    }
    if (*hl && *hh && *lo > *hi) {
        err(c, ptr, "%s", "the bounds leave no value");
        return false;
    }
    return true;
}

static cn *gen_integer(sctx *c, const cJSON *s, const char *ptr) {
    bool hl, hh;
    int64_t lo = 0, hi = 0;
    if (!int_bounds(c, s, ptr, &hl, &lo, &hh, &hi)) return NULL;
    return int_range(c, hl, lo, hh, hi);
}

static cn *gen_number(sctx *c, const cJSON *s, const char *ptr) {
    cons_grammar *g = c->g;
    bool hl, hh;
    int64_t lo = 0, hi = 0;
    if (!int_bounds(c, s, ptr, &hl, &lo, &hh, &hi)) return NULL;
    cn *frac = cn_cat2(g, cn_byte(g, '.'), digits(c, 1, -1));
    if (!hl && !hh) {
        cn *ex = cn_cat3(g, cn_range(g, 'E', 'E'), cn_opt(g, re(c, "[+-]")), digits(c, 1, -1));
        ex = cn_alt2(g, ex, cn_cat3(g, cn_byte(g, 'e'), cn_opt(g, re(c, "[+-]")), digits(c, 1, -1)));
        return cn_cat3(g, int_range(c, false, 0, false, 0), cn_opt(g, frac), cn_opt(g, ex));
    }
    /* integers in range, plus k.f where [k, k+1) (or (-(m+1), -m]) fits */
    cn *alts[3];
    int na = 0;
    alts[na++] = int_range(c, hl, lo, hh, hi);
    int64_t a = hl && lo > 0 ? lo : 0;
    if (!hh || hi - 1 >= a) {
        cn *k = nat_range(c, a, hh ? hi - 1 : -1);
        if (k) alts[na++] = cn_cat2(g, k, frac);
    }
    int64_t ma = hh && hi < 0 ? -hi : 0;
    if (!hl || -lo - 1 >= ma) {
        cn *m = nat_range(c, ma, hl ? -lo - 1 : -1);
        if (m) alts[na++] = cn_cat3(g, cn_byte(g, '-'), m, frac);
    }
    if (!alts[0]) {
        if (na == 1) return err(c, ptr, "%s", "the bounds leave no value");
        alts[0] = alts[--na];
    }
    return cn_alt(g, alts, na);
}

static const char *const formats[][2] = {
    {"date", "[1-9]\\d{3}-((0[13578]|1[02])-(0[1-9]|[12]\\d|3[01])|(0[469]|11)-(0[1-9]|[12]\\d|30)|02-(0[1-9]|1\\d|2[0-8]))"},
    {"time", "([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,6})?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)"},
    {"date-time", "[1-9]\\d{3}-((0[13578]|1[02])-(0[1-9]|[12]\\d|3[01])|(0[469]|11)-(0[1-9]|[12]\\d|30)|02-(0[1-9]|1\\d|2[0-8]))"
                  "T([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,6})?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)"},
    {"email", "[a-zA-Z0-9_+-]+(\\.[a-zA-Z0-9_+-]+)*@[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*\\.[a-zA-Z]{2,}"},
    {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
    {"ipv4", "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)(\\.(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)){3}"},
    {"uri", "[a-zA-Z][a-zA-Z0-9+.-]*://([a-zA-Z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+(:\\d{1,5})?"
            "(/([a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*"
            "(\\?([a-zA-Z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?"
            "(#([a-zA-Z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?"},
};

static bool get_count(sctx *c, const cJSON *s, const char *key, const char *ptr, int32_t *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!x) return true;
    char p[256];
    child_ptr(p, sizeof p, ptr, key);
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble != floor(x->valuedouble)) {
        err(c, p, "'%s' must be a non-negative integer", key);
        return false;
    }
    if (x->valuedouble > 1000) {
        err(c, p, "'%s' above 1000 is not supported", key);
        return false;
    }
    *v = (int32_t)x->valuedouble;
    return true;
}

static cn *gen_string(sctx *c, const cJSON *s, const char *ptr) {
    int32_t min = 0, max = -1;
    if (!get_count(c, s, "minLength", ptr, &min) || !get_count(c, s, "maxLength", ptr, &max)) return NULL;
    if (max >= 0 && min > max) return err(c, ptr, "%s", "minLength is greater than maxLength");
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    char p[256];
    if (pat && fmt) {
        child_ptr(p, sizeof p, ptr, "format");
        return err(c, p, "%s", "'format' together with 'pattern' is not supported");
    }
    if ((pat || fmt) && (min > 0 || max >= 0)) {
        child_ptr(p, sizeof p, ptr, min > 0 ? "minLength" : "maxLength");
        return err(c, p, "'%s' together with 'pattern' or 'format' is not supported",
                   min > 0 ? "minLength" : "maxLength");
    }
    if (pat) {
        child_ptr(p, sizeof p, ptr, "pattern");
        if (!cJSON_IsString(pat)) return err(c, p, "%s", "'pattern' must be a string");
        cons_diag d;
        cn *x = cons_regex_parse(c->g, pat->valuestring, strlen(pat->valuestring), true, &d);
        if (!x) {
            if (!c->failed) {
                cons_diag_set(c->d, -1, "pattern: %s (at offset %d of the pattern)", d.message, d.offset);
                snprintf(c->d->pointer, sizeof c->d->pointer, "%s", p);
            }
            c->failed = true;
            return NULL;
        }
        return cn_cat3(c->g, cn_byte(c->g, '"'), x, cn_byte(c->g, '"'));
    }
    if (fmt) {
        child_ptr(p, sizeof p, ptr, "format");
        if (!cJSON_IsString(fmt)) return err(c, p, "%s", "'format' must be a string");
        for (size_t i = 0; i < SGL_ARRAY_LEN(formats); i++)
            if (strcmp(formats[i][0], fmt->valuestring) == 0)
                return cn_cat3(c->g, cn_byte(c->g, '"'), re(c, formats[i][1]), cn_byte(c->g, '"'));
        return err(c, p, "unsupported format '%s' (supported: date, time, date-time, email, uuid, ipv4, uri)",
                   fmt->valuestring);
    }
    return json_string(c, min, max);
}

static cn *any_value(sctx *c, int depth);

/* Whitespace (flexible policy) follows every '{' '[' ',' ':' and every
 * value, never two runs side by side, so no run exceeds ws_max. */
static cn *json_map(sctx *c, cn *value) {
    cons_grammar *g = c->g;
    cn *pair = cn_cat(g, (cn *[]){json_string(c, 0, -1), ws(c), cn_byte(g, ':'), ws(c), value, ws(c)}, 6);
    cn *more = cn_rep(g, cn_cat3(g, cn_byte(g, ','), ws(c), pair), 0, -1);
    return cn_cat(g, (cn *[]){cn_byte(g, '{'), ws(c), cn_opt(g, cn_cat2(g, pair, more)), cn_byte(g, '}')}, 4);
}

static cn *json_list(sctx *c, cn *value) {
    cons_grammar *g = c->g;
    cn *item = cn_cat2(g, value, ws(c));
    cn *more = cn_rep(g, cn_cat3(g, cn_byte(g, ','), ws(c), item), 0, -1);
    return cn_cat(g, (cn *[]){cn_byte(g, '['), ws(c), cn_opt(g, cn_cat2(g, item, more)), cn_byte(g, ']')}, 4);
}

static cn *any_value(sctx *c, int depth) {
    cons_grammar *g = c->g;
    cn *alts[8];
    int n = 0;
    alts[n++] = json_string(c, 0, -1);
    alts[n++] = gen_number(c, NULL, "");
    alts[n++] = cn_str(g, "true");
    alts[n++] = cn_str(g, "false");
    alts[n++] = cn_str(g, "null");
    if (depth > 1) {
        cn *inner = any_value(c, depth - 1);
        alts[n++] = json_list(c, inner);
        alts[n++] = json_map(c, inner);
    } else {
        alts[n++] = cn_str(g, "[]");
        alts[n++] = cn_str(g, "{}");
    }
    return cn_alt(g, alts, n);
}

static cn *literal(sctx *c, const cJSON *v) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        c->failed = true;
        cons_diag_set(c->d, -1, "out of memory");
        return NULL;
    }
    cn *x = cn_str(c->g, s);
    free(s);
    return x;
}

/* The rule of a $ref target (made on first use; the body is generated then). */
static cn *gen_ref(sctx *c, const cJSON *ref, const char *ptr) {
    char p[256];
    child_ptr(p, sizeof p, ptr, "$ref");
    if (!cJSON_IsString(ref)) return err(c, p, "%s", "'$ref' must be a string");
    const char *r = ref->valuestring;
    if (r[0] != '#') return err(c, p, "only local references (\"#...\") are supported, not '%s'", r);
    for (sref *x = c->refs; x; x = x->next)
        if (strcmp(x->ptr, r) == 0) return cn_ref(c->g, x->rule);
    /* resolve the JSON pointer */
    const cJSON *t = c->root;
    const char *q = r + 1;
    char tok[256];
    while (*q) {
        if (*q != '/') return err(c, p, "invalid JSON pointer in '$ref': '%s'", r);
        q++;
        size_t n = 0;
        while (*q && *q != '/' && n + 1 < sizeof tok) {
            if (q[0] == '~' && q[1] == '0') {
                tok[n++] = '~';
                q += 2;
            } else if (q[0] == '~' && q[1] == '1') {
                tok[n++] = '/';
                q += 2;
            } else {
                tok[n++] = *q++;
            }
        }
        tok[n] = 0;
        if (cJSON_IsArray(t)) {
            char *end;
            long i = strtol(tok, &end, 10);
            t = *end || n == 0 ? NULL : cJSON_GetArrayItem(t, (int)i);
        } else {
            t = cJSON_IsObject(t) ? cJSON_GetObjectItemCaseSensitive(t, tok) : NULL;
        }
        if (!t) return err(c, p, "'$ref' target '%s' does not exist", r);
    }
    sref *x = malloc(sizeof *x);
    char *copy = x ? sgl_strdup(r) : NULL;
    int32_t rule = copy ? cg_rule_add(c->g, NULL, 0, -1) : -1;
    if (rule < 0) {
        free(x);
        free(copy);
        c->failed = true;
        cons_diag_set(c->d, -1, "out of memory");
        return NULL;
    }
    *x = (sref){copy, rule, c->refs};
    c->refs = x;
    cn *body = gen(c, t, r + 1); /* may grow g->rules: assign after */
    if (!body) return NULL;
    c->g->rules[rule].body = body;
    return cn_ref(c->g, rule);
}

static cn *gen_object(sctx *c, const cJSON *s, const char *ptr) {
    cons_grammar *g = c->g;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    char p[256];
    if (props && !cJSON_IsObject(props)) {
        child_ptr(p, sizeof p, ptr, "properties");
        return err(c, p, "%s", "'properties' must be an object");
    }
    if (req && !cJSON_IsArray(req)) {
        child_ptr(p, sizeof p, ptr, "required");
        return err(c, p, "%s", "'required' must be an array");
    }
    int32_t k = props ? cJSON_GetArraySize(props) : 0;
    /* required names must be listed properties */
    int i = 0;
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next, i++) {
        index_ptr(p, sizeof p, ptr, "required", i);
        if (!cJSON_IsString(r)) return err(c, p, "%s", "'required' entries must be strings");
        if (!props || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
            return err(c, p, "required property '%s' is not in 'properties' (not supported)", r->valuestring);
    }
    if (k == 0) {
        if (addl && cJSON_IsFalse(addl)) return cn_cat3(g, cn_byte(g, '{'), ws(c), cn_byte(g, '}'));
        if (addl && cJSON_IsObject(addl)) {
            child_ptr(p, sizeof p, ptr, "additionalProperties");
            cn *v = gen(c, addl, p);
            return v ? json_map(c, v) : NULL;
        }
        if (addl && !cJSON_IsTrue(addl)) {
            child_ptr(p, sizeof p, ptr, "additionalProperties");
            return err(c, p, "%s", "'additionalProperties' must be a boolean or a schema");
        }
        return json_map(c, any_value(c, ANY_DEPTH - 1));
    }
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl)) {
        child_ptr(p, sizeof p, ptr, "additionalProperties");
        return err(c, p, "%s", "'additionalProperties' must be a boolean or a schema");
    }
    if (addl && cJSON_IsObject(addl)) {
        /* generated objects carry no additional properties; still check the schema */
        child_ptr(p, sizeof p, ptr, "additionalProperties");
        if (!gen(c, addl, p)) return NULL;
    }
    /* P_j: "key": value; rules S_j (something emitted before j) and A_j (nothing yet) */
    cn **P = calloc((size_t)k, sizeof *P);
    bool *opt = calloc((size_t)k, sizeof *opt);
    int32_t *S = malloc(sizeof *S * ((size_t)k + 1)), *A = malloc(sizeof *A * ((size_t)k + 1));
    cn *res = NULL;
    if (!P || !opt || !S || !A) {
        c->failed = true;
        cons_diag_set(c->d, -1, "out of memory");
        goto out;
    }
    i = 0;
    for (const cJSON *pr = props->child; pr; pr = pr->next, i++) {
        char pp[256], kp[256];
        child_ptr(pp, sizeof pp, ptr, "properties");
        child_ptr(kp, sizeof kp, pp, pr->string);
        cn *v = gen(c, pr, kp);
        if (!v) goto out;
        cJSON *key = cJSON_CreateString(pr->string);
        cn *kl = key ? literal(c, key) : NULL;
        cJSON_Delete(key);
        P[i] = cn_cat(g, (cn *[]){kl, ws(c), cn_byte(g, ':'), ws(c), v, ws(c)}, 6);
        opt[i] = true;
        for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
            if (strcmp(r->valuestring, pr->string) == 0) opt[i] = false;
    }
    for (int32_t j = 0; j <= k; j++) {
        S[j] = cg_rule_add(g, NULL, 0, -1);
        A[j] = cg_rule_add(g, NULL, 0, -1);
        if (S[j] < 0 || A[j] < 0) {
            c->failed = true;
            cons_diag_set(c->d, -1, "out of memory");
            goto out;
        }
    }
    cn *close = cn_byte(g, '}');
    g->rules[S[k]].body = close;
    g->rules[A[k]].body = close;
    for (int32_t j = k - 1; j >= 0; j--) {
        cn *emit = cn_cat(g, (cn *[]){cn_byte(g, ','), ws(c), P[j], cn_ref(g, S[j + 1])}, 4);
        g->rules[S[j]].body = opt[j] ? cn_alt2(g, emit, cn_ref(g, S[j + 1])) : emit;
        cn *first = cn_cat2(g, P[j], cn_ref(g, S[j + 1]));
        g->rules[A[j]].body = opt[j] ? cn_alt2(g, first, cn_ref(g, A[j + 1])) : first;
    }
    res = cn_cat3(g, cn_byte(g, '{'), ws(c), cn_ref(g, A[0]));
out:
    free(P);
    free(opt);
    free(S);
    free(A);
    return c->failed ? NULL : res;
}

static cn *gen_array(sctx *c, const cJSON *s, const char *ptr) {
    cons_grammar *g = c->g;
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(s, "prefixItems");
    int32_t min = 0, max = -1;
    char p[256];
    if (!get_count(c, s, "minItems", ptr, &min) || !get_count(c, s, "maxItems", ptr, &max)) return NULL;
    if (max >= 0 && min > max) return err(c, ptr, "%s", "minItems is greater than maxItems");
    if (prefix && !cJSON_IsArray(prefix)) {
        child_ptr(p, sizeof p, ptr, "prefixItems");
        return err(c, p, "%s", "'prefixItems' must be an array");
    }
    int32_t np = prefix ? cJSON_GetArraySize(prefix) : 0;
    if (np > 1000) return err(c, ptr, "%s", "more than 1000 prefixItems");
    cn *item = NULL;
    bool no_more = items && cJSON_IsFalse(items);
    if (items && !cJSON_IsBool(items)) {
        child_ptr(p, sizeof p, ptr, "items");
        if (!cJSON_IsObject(items)) return err(c, p, "%s", "'items' must be a schema");
        item = gen(c, items, p);
        if (!item) return NULL;
    } else if (!no_more) {
        item = any_value(c, ANY_DEPTH - 1);
    }
    if (no_more && min > np) return err(c, ptr, "%s", "minItems exceeds the prefixItems allowed");
    cn **pv = calloc((size_t)np + 1, sizeof *pv);
    if (!pv) return err(c, ptr, "%s", "out of memory");
    int i = 0;
    for (const cJSON *x = prefix ? prefix->child : NULL; x; x = x->next, i++) {
        index_ptr(p, sizeof p, ptr, "prefixItems", i);
        pv[i] = gen(c, x, p);
        if (!pv[i]) {
            free(pv);
            return NULL;
        }
    }
    /* built from the end: tail(i) = the elements from position i on */
    int32_t top = np > min ? np : min;
    if (max >= 0 && top > max) top = max;
    cn *sep = cn_cat2(g, cn_byte(g, ','), ws(c));
    if (item) item = cn_cat2(g, item, ws(c));
    for (int32_t j = 0; j < np; j++) pv[j] = cn_cat2(g, pv[j], ws(c));
    cn *tail;
    if ((max >= 0 && top >= max) || (no_more && top >= np))
        tail = cn_empty(g);
    else
        tail = cn_rep(g, cn_cat2(g, top == 0 ? cn_empty(g) : sep, item), 0, max >= 0 ? max - top : -1);
    if (top == 0 && !((max >= 0 && top >= max) || no_more)) {
        /* no fixed positions: item (sep item){0,max-1}, all optional */
        cn *more = cn_rep(g, cn_cat2(g, sep, item), 0, max >= 0 ? max - 1 : -1);
        tail = cn_opt(g, cn_cat2(g, item, more));
    }
    for (int32_t j = top - 1; j >= 0; j--) {
        cn *v = j < np ? pv[j] : item;
        cn *e = cn_cat3(g, j == 0 ? cn_empty(g) : sep, v, tail);
        tail = j < min ? e : cn_opt(g, e);
    }
    free(pv);
    return cn_cat3(g, cn_cat2(g, cn_byte(g, '['), ws(c)), tail, cn_byte(g, ']'));
}

static const char *const known[] = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "items", "prefixItems",
    "minItems", "maxItems", "anyOf", "oneOf", "$ref", "$defs", "definitions", "minLength", "maxLength",
    "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    /* annotations: no effect on what validates */
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly",
};

static cn *gen_type(sctx *c, const cJSON *s, const char *ptr, const char *type, const char *tptr) {
    if (strcmp(type, "null") == 0) return cn_str(c->g, "null");
    if (strcmp(type, "boolean") == 0) return cn_alt2(c->g, cn_str(c->g, "true"), cn_str(c->g, "false"));
    if (strcmp(type, "integer") == 0) return gen_integer(c, s, ptr);
    if (strcmp(type, "number") == 0) return gen_number(c, s, ptr);
    if (strcmp(type, "string") == 0) return gen_string(c, s, ptr);
    if (strcmp(type, "object") == 0) return gen_object(c, s, ptr);
    if (strcmp(type, "array") == 0) return gen_array(c, s, ptr);
    return err(c, tptr, "unknown type '%s'", type);
}

static bool has(const cJSON *s, const char *k) { return cJSON_GetObjectItemCaseSensitive(s, k) != NULL; }

static cn *gen(sctx *c, const cJSON *s, const char *ptr) {
    cons_grammar *g = c->g;
    char p[256];
    if (c->failed) return NULL;
    if (cJSON_IsTrue(s)) return any_value(c, ANY_DEPTH);
    if (cJSON_IsFalse(s)) return err(c, ptr, "%s", "schema 'false' matches nothing");
    if (!cJSON_IsObject(s)) return err(c, ptr, "%s", "a schema must be an object or a boolean");
    if (++c->depth > MAX_DEPTH) return err(c, ptr, "%s", "schema nested too deeply");
    cn *res = NULL;
    for (const cJSON *k = s->child; k; k = k->next) {
        bool ok = false;
        for (size_t i = 0; i < SGL_ARRAY_LEN(known) && !ok; i++) ok = strcmp(known[i], k->string) == 0;
        if (!ok) {
            child_ptr(p, sizeof p, ptr, k->string);
            err(c, p, "unsupported JSON-schema keyword '%s'", k->string);
            goto out;
        }
    }
    const cJSON *x;
    if ((x = cJSON_GetObjectItemCaseSensitive(s, "$defs")) || (x = cJSON_GetObjectItemCaseSensitive(s, "definitions"))) {
        if (!cJSON_IsObject(x)) {
            child_ptr(p, sizeof p, ptr, x->string);
            err(c, p, "'%s' must be an object", x->string);
            goto out;
        }
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(s, "$ref"))) {
        res = gen_ref(c, x, ptr);
        goto out;
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(s, "const"))) {
        res = literal(c, x);
        goto out;
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        child_ptr(p, sizeof p, ptr, "enum");
        int32_t n = cJSON_IsArray(x) ? cJSON_GetArraySize(x) : 0;
        if (n == 0) {
            err(c, p, "%s", "'enum' must be a non-empty array");
            goto out;
        }
        cn **v = malloc(sizeof *v * (size_t)n);
        if (!v) goto out;
        int i = 0;
        for (const cJSON *e = x->child; e; e = e->next) v[i++] = literal(c, e);
        res = cn_alt(g, v, n);
        free(v);
        goto out;
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    if (!any) any = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    if (any) {
        child_ptr(p, sizeof p, ptr, any->string);
        int32_t n = cJSON_IsArray(any) ? cJSON_GetArraySize(any) : 0;
        if (n == 0 || has(s, "anyOf") + has(s, "oneOf") > 1) {
            err(c, p, "'%s' must be a non-empty array (and only one of anyOf / oneOf)", any->string);
            goto out;
        }
        if (has(s, "type") || has(s, "properties") || has(s, "items")) {
            err(c, p, "'%s' next to 'type', 'properties' or 'items' is not supported", any->string);
            goto out;
        }
        cn **v = malloc(sizeof *v * (size_t)n);
        if (!v) goto out;
        int i = 0;
        for (const cJSON *e = any->child; e; e = e->next, i++) {
            char q[256];
            index_ptr(q, sizeof q, ptr, any->string, i);
            v[i] = gen(c, e, q);
        }
        res = c->failed ? NULL : cn_alt(g, v, n);
        free(v);
        goto out;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    child_ptr(p, sizeof p, ptr, "type");
    if (type && cJSON_IsString(type)) {
        res = gen_type(c, s, ptr, type->valuestring, p);
    } else if (type && cJSON_IsArray(type) && cJSON_GetArraySize(type) > 0) {
        int32_t n = cJSON_GetArraySize(type);
        cn **v = malloc(sizeof *v * (size_t)n);
        if (!v) goto out;
        int i = 0;
        for (const cJSON *e = type->child; e; e = e->next, i++) {
            char q[256];
            index_ptr(q, sizeof q, ptr, "type", i);
            v[i] = cJSON_IsString(e) ? gen_type(c, s, ptr, e->valuestring, q) : err(c, q, "%s", "a type must be a string");
        }
        res = c->failed ? NULL : cn_alt(g, v, n);
        free(v);
    } else if (type) {
        err(c, p, "%s", "'type' must be a string or an array of strings");
    } else if (has(s, "properties") || has(s, "required") || has(s, "additionalProperties")) {
        res = gen_object(c, s, ptr);
    } else if (has(s, "items") || has(s, "prefixItems") || has(s, "minItems") || has(s, "maxItems")) {
        res = gen_array(c, s, ptr);
    } else if (has(s, "pattern") || has(s, "format") || has(s, "minLength") || has(s, "maxLength")) {
        res = gen_string(c, s, ptr);
    } else if (has(s, "minimum") || has(s, "maximum") || has(s, "exclusiveMinimum") || has(s, "exclusiveMaximum")) {
        res = gen_number(c, s, ptr);
    } else {
        res = any_value(c, ANY_DEPTH);
    }
out:
    c->depth--;
    if (!res && !c->failed) {
        c->failed = true;
        cons_diag_set(c->d, -1, "out of memory");
    }
    return c->failed ? NULL : res;
}

int cons_schema_build(cons_grammar *g, const char *text, size_t len, const cons_options *opt,
                      cons_diag *diag) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        cons_diag_set(diag, end ? (int32_t)(end - text) : -1, "JSON schema: invalid JSON");
        cons_diag_locate(diag, text, len);
        return -1;
    }
    sctx c = {.g = g, .root = root, .opt = opt, .d = diag};
    int32_t r = cg_rule_add(g, NULL, 0, -1);
    int rc = -1;
    if (r >= 0) {
        sref *x = malloc(sizeof *x);
        char *copy = x ? sgl_strdup("#") : NULL;
        if (copy) {
            *x = (sref){copy, r, NULL};
            c.refs = x;
            g->start = r;
            cn *body = gen(&c, root, ""); /* may grow g->rules: assign after */
            g->rules[r].body = body;
            rc = body ? 0 : -1;
        } else {
            free(x);
            cons_diag_set(diag, -1, "out of memory");
        }
    } else {
        cons_diag_set(diag, -1, "out of memory");
    }
    for (sref *x = c.refs, *nx; x; x = nx) {
        nx = x->next;
        free(x->ptr);
        free(x);
    }
    cJSON_Delete(root);
    return rc;
}
