/* test_constrain.c: the constraint compiler without a vocabulary: regex
 * matching against a table of cases, located regex errors, the state budget,
 * choices, the compile cache, jump-forward bytes checked by probing, and
 * grammars (matching, line:col errors, the recogniser's forced bytes). */
#include <string.h>

#include "runtime/constrain/constrain.h"
#include "tests/test.h"

static cons_program *compile(cons_kind k, const char *text, cons_diag *d) {
    return cons_compile(k, text, strlen(text), NULL, d);
}

typedef struct mcase {
    const char *re, *text;
    int match;
} mcase;

static const mcase match_cases[] = {
    {"abc", "abc", 1}, {"abc", "ab", 0}, {"abc", "abcd", 0}, {"", "", 1}, {"", "a", 0},
    {"a|b", "a", 1}, {"a|b", "b", 1}, {"a|b", "ab", 0}, {"a|", "", 1}, {"|a", "a", 1},
    {"a*", "", 1}, {"a*", "aaaa", 1}, {"a+", "", 0}, {"a+", "aaa", 1}, {"a?b", "b", 1},
    {"a?b", "ab", 1}, {"a?b", "aab", 0}, {"a{3}", "aaa", 1}, {"a{3}", "aa", 0},
    {"a{2,}", "aaaaa", 1}, {"a{2,}", "a", 0}, {"a{1,3}", "aaa", 1}, {"a{1,3}", "aaaa", 0},
    {"a{0,2}", "", 1}, {"(ab)+", "ababab", 1}, {"(ab)+", "aba", 0}, {"(?:ab|cd)*e", "abcdabe", 1},
    {"(?:ab|cd)*e", "abce", 0}, {"[abc]+", "cab", 1}, {"[abc]+", "cad", 0}, {"[a-z0-9_]+", "a_9z", 1},
    {"[^a-z]", "A", 1}, {"[^a-z]", "q", 0}, {"[^a]", "\n", 1}, {"[-a]", "-", 1}, {"[a-]", "-", 1},
    {"\\d+", "0123", 1}, {"\\d+", "12a", 0}, {"\\w+", "Ab_9", 1}, {"\\w", "-", 0}, {"\\s", " ", 1},
    {"\\s", "\t", 1}, {"\\S", " ", 0}, {"\\D", "5", 0}, {"\\D", "x", 1}, {"\\W", "_", 0},
    {"\\W", "\xc3\xa9", 1}, {".", "\n", 0}, {".", "x", 1}, {".", "\xc3\xa9", 1}, {".", "\xe2\x82\xac", 1},
    {".", "\xf0\x9f\x98\x80", 1}, {".", "\xc3", 0}, {".", "\xff", 0}, {".", "\xed\xa0\x80", 0},
    {"..", "\xc3\xa9", 0}, {"\\.", ".", 1}, {"\\.", "a", 0}, {"\\*\\+\\?\\{\\}\\[\\]\\(\\)\\|\\\\", "*+?{}[]()|\\", 1},
    {"\\n\\t\\r\\f\\v", "\n\t\r\f\v", 1}, {"\\x41\\u00e9", "A\xc3\xa9", 1},
    {"caf\xc3\xa9", "caf\xc3\xa9", 1}, {"\xc3\xa9+", "\xc3\xa9\xc3\xa9", 1}, {"\xc3\xa9+", "\xc3\xa9\xc3", 0},
    {"[\xc3\xa0-\xc3\xbf]+", "\xc3\xa0\xc3\xa9\xc3\xbf", 1}, {"[\xc3\xa0-\xc3\xbf]", "\xc3\x9f", 0},
    {"[\xce\xb1-\xcf\x89\xe4\xb8\x80-\xe9\xbe\xa5]+", "\xce\xb1\xe4\xb8\xad", 1},
    {"[^\xc3\xa9]", "\xc3\xa9", 0}, {"[^\xc3\xa9]", "\xc3\xa8", 1}, {"[^\xc3\xa9]", "\xf0\x9f\x98\x80", 1},
    {"[\\u0100-\\uffff]", "\xc4\x80", 1}, {"[\\u0100-\\uffff]", "\xef\xbf\xbf", 1},
    {"[\\u0100-\\uffff]", "\xc3\xbf", 0}, {"[\\d\\s]+", "1 2", 1}, {"[\\w.-]+@[\\w-]+\\.[a-z]{2,}", "a.b-c@x-y.org", 1},
    {"^abc$", "abc", 1}, {"^a|b$", "b", 1}, {"^a|b$", "a", 1}, {"a$|b", "b", 1}, {"a$", "a", 1},
    {"(a|b)*abb", "babb", 1}, {"(a|b)*abb", "abab", 0}, {"-?(0|[1-9]\\d*)(\\.\\d+)?", "-12.50", 1},
    {"-?(0|[1-9]\\d*)(\\.\\d+)?", "012", 0}, {"(x{2}){2,3}", "xxxxxx", 1}, {"(x{2}){2,3}", "xxxxx", 0},
    {"(a*)*", "aaa", 1}, {"(a?){3}b", "ab", 1}, {"(|a)+b", "aab", 1},
    {"\"([^\"\\\\]|\\\\.)*\"", "\"a\\\"b\"", 1}, {"\"([^\"\\\\]|\\\\.)*\"", "\"a\"b\"", 0},
};

static void test_regex_match(void) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(match_cases); i++) {
        const mcase *c = &match_cases[i];
        cons_diag d;
        cons_program *p = compile(CONS_REGEX, c->re, &d);
        CHECK_MSG(p != NULL, "regex /%s/ failed: %s at %d", c->re, d.message, d.offset);
        if (!p) continue;
        int got = cons_program_match(p, c->text, strlen(c->text));
        CHECK_MSG(got == c->match, "/%s/ on \"%s\": got %d, expected %d", c->re, c->text, got, c->match);
        CHECK(cons_program_is_dfa(p));
        cons_program_release(p);
    }
}

typedef struct ecase {
    const char *re;
    int32_t offset;
    const char *msg;
} ecase;

static const ecase error_cases[] = {
    {"(ab", 0, "unterminated group"}, {"ab)", 2, "unmatched ')'"}, {"a]", 1, "unmatched ']'"},
    {"a}", 1, "unmatched '}'"}, {"*a", 0, "nothing to repeat"}, {"a**", 2, "multiple quantifiers"},
    {"a*?", 2, "lazy"}, {"a{2", 1, "missing '}'"}, {"a{x}", 1, "invalid repetition"},
    {"a{3,2}", 1, "m greater than n"}, {"a{1001}", 1, "above 1000"}, {"[abc", 0, "unterminated character class"},
    {"[]", 0, "empty character class"}, {"[z-a]", 1, "out of order"}, {"[\\d-z]", 1, "shorthand cannot start"},
    {"[a-\\d]", 3, "shorthand cannot end"}, {"(?=a)", 0, "unsupported group"}, {"(?<n>a)", 0, "unsupported group"},
    {"a\\", 1, "trailing backslash"}, {"\\q", 0, "unknown escape"}, {"\\1", 0, "unknown escape"},
    {"ab\xff", 2, "invalid UTF-8"}, {"\\xZ1", 0, "two hex digits"}, {"\\ud800", 0, "surrogate"},
    {"^*", 1, "nothing to repeat"}, {"a|*", 2, "nothing to repeat"}, {"a[b[c]]", 3, "must be escaped"},
};

static void test_regex_errors(void) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(error_cases); i++) {
        const ecase *c = &error_cases[i];
        cons_diag d;
        cons_program *p = compile(CONS_REGEX, c->re, &d);
        CHECK_MSG(p == NULL, "/%s/ should fail", c->re);
        if (p) {
            cons_program_release(p);
            continue;
        }
        CHECK_MSG(d.offset == c->offset, "/%s/: offset %d, expected %d (%s)", c->re, d.offset, c->offset,
                  d.message);
        CHECK_MSG(strstr(d.message, c->msg) != NULL, "/%s/: message \"%s\" lacks \"%s\"", c->re,
                  d.message, c->msg);
    }
    /* a DFA over the budget is refused naming the budget, not by running out of memory */
    cons_diag d;
    cons_program *p = compile(CONS_REGEX, "(a|b)*a(a|b){15}", &d);
    CHECK(p == NULL);
    CHECK_MSG(strstr(d.message, "max_states = 20000") != NULL, "budget message: %s", d.message);
    cons_program_release(p);
    cons_options o = cons_options_default();
    o.max_states = 100;
    p = cons_compile(CONS_REGEX, "(a|b)*a(a|b){6}", 15, &o, &d);
    CHECK(p == NULL && strstr(d.message, "max_states = 100"));
    cons_program_release(p);
    p = compile(CONS_REGEX, "(a|b)*a(a|b){6}", &d);
    CHECK(p != NULL);
    cons_program_release(p);
    /* huge repetition nests fail on the NFA bound, also naming the budget */
    p = compile(CONS_REGEX, "((a{1000}){1000}){1000}", &d);
    CHECK(p == NULL && strstr(d.message, "max_states"));
    cons_program_release(p);
    /* a language with no text at all */
    p = compile(CONS_REGEX, "a$b", &d);
    CHECK(p == NULL && strstr(d.message, "matches no text"));
    cons_program_release(p);
}

static void test_minimal(void) {
    /* (a|b)*abb has the textbook 4-state minimal DFA; equivalent spellings agree */
    cons_diag d;
    cons_program *p = compile(CONS_REGEX, "(a|b)*abb", &d);
    CHECK(p && cons_program_states(p) == 4);
    cons_program_release(p);
    p = compile(CONS_REGEX, "(?:a|b|ab|ba)*(?:ab)(?:b)", &d);
    CHECK(p && cons_program_states(p) == 4);
    cons_program_release(p);
    p = compile(CONS_REGEX, "[0-9]{1,3}", &d);
    CHECK(p && cons_program_states(p) == 4);
    cons_program_release(p);
}

static void test_choices(void) {
    cons_diag d;
    cons_program *p = compile(CONS_CHOICES, "[\"red\", \"green\", \"grey\", \"\xc3\xa9t\xc3\xa9\"]", &d);
    CHECK(p != NULL);
    if (p) {
        CHECK(cons_program_match(p, "red", 3));
        CHECK(cons_program_match(p, "grey", 4));
        CHECK(cons_program_match(p, "\xc3\xa9t\xc3\xa9", 5));
        CHECK(!cons_program_match(p, "gre", 3));
        CHECK(!cons_program_match(p, "redd", 4));
        CHECK_INT(cons_program_kind(p), CONS_CHOICES);
    }
    cons_program_release(p);
    CHECK(compile(CONS_CHOICES, "[\"a\", 3]", &d) == NULL);
    CHECK_STR(d.pointer, "/1");
    CHECK(compile(CONS_CHOICES, "[]", &d) == NULL && strstr(d.message, "empty"));
    CHECK(compile(CONS_CHOICES, "{\"a\":1}", &d) == NULL && strstr(d.message, "array"));
    CHECK(compile(CONS_CHOICES, "[\"a\"", &d) == NULL && strstr(d.message, "invalid JSON"));
    CHECK_STR(cons_kind_name(CONS_CHOICES), "choices");
    CHECK_STR(cons_kind_name(CONS_JSON_SCHEMA), "json_schema");
}

static void test_cache(void) {
    cons_diag d;
    const char *re = "[a-z]+@[a-z]+\\.com";
    cons_program *a = cons_compile_cached(CONS_REGEX, re, strlen(re), NULL, &d);
    cons_program *b = cons_compile_cached(CONS_REGEX, re, strlen(re), NULL, &d);
    cons_options o = cons_options_default();
    o.max_states = 1000;
    cons_program *c = cons_compile_cached(CONS_REGEX, re, strlen(re), &o, &d);
    cons_program *e = cons_compile_cached(CONS_CHOICES, "[\"x\"]", 5, NULL, &d);
    CHECK(a && a == b);
    CHECK(c && c != a);
    CHECK(e && e != a);
    CHECK(cons_compile_cached(CONS_REGEX, "(", 1, NULL, &d) == NULL && d.offset == 0);
    cons_program_release(a);
    cons_program_release(b);
    cons_program_release(c);
    cons_program_release(e);
    cons_cache_clear();
    a = cons_compile_cached(CONS_REGEX, re, strlen(re), NULL, &d);
    CHECK(a != NULL && cons_program_match(a, "ab@cd.com", 9));
    cons_program_release(a);
    cons_cache_clear();
}

/* forced bytes: each one is the only byte that keeps the matcher alive */
static void check_forced(cons_matcher *m) {
    char buf[256];
    size_t n = cons_matcher_forced(m, buf, sizeof buf);
    sgl_error err;
    cons_matcher *c = cons_matcher_clone(m, &err);
    for (size_t i = 0; i < n && c; i++) {
        CHECK(!cons_matcher_accepting(c));
        for (int b = 0; b < 256; b++) {
            char x = (char)b;
            int alive = cons_matcher_probe(c, &x, 1);
            CHECK_MSG(alive == (x == buf[i]), "forced byte %zu: byte %d alive=%d", i, b, alive);
        }
        CHECK(cons_matcher_accept_bytes(c, &buf[i], 1) == 0);
    }
    if (c && n < sizeof buf) {
        /* after the forced run: accepting or a real choice */
        int alive = 0;
        for (int b = 0; b < 256; b++) {
            char x = (char)b;
            alive += cons_matcher_probe(c, &x, 1);
        }
        CHECK(cons_matcher_accepting(c) || alive != 1);
    }
    cons_matcher_free(c);
}

static void test_forced(void) {
    const char *pieces[3] = {"a", "b", "x"};
    size_t lens[3] = {1, 1, 1};
    int32_t eos = 2;
    sgl_error err;
    cons_vocab *v = cons_vocab_new(3, pieces, lens, NULL, &eos, 1, &err);
    CHECK(v != NULL);
    cons_diag d;
    cons_program *p = compile(CONS_REGEX, "\\{\"name\": \"[a-z]+\", \"age\": \\d+\\}", &d);
    CHECK(p != NULL);
    cons_matcher *m = cons_matcher_new(p, v, NULL, 0, &err);
    char buf[64];
    size_t n = cons_matcher_forced(m, buf, sizeof buf);
    CHECK(n == 10 && memcmp(buf, "{\"name\": \"", 10) == 0);
    check_forced(m);
    CHECK(cons_matcher_accept_bytes(m, buf, n) == 0);
    CHECK(cons_matcher_forced(m, buf, sizeof buf) == 0);
    CHECK(cons_matcher_accept_bytes(m, "bob\"", 4) == 0);
    n = cons_matcher_forced(m, buf, sizeof buf);
    CHECK(n == 9 && memcmp(buf, ", \"age\": ", 9) == 0);
    check_forced(m);
    CHECK(cons_matcher_accept_bytes(m, buf, n) == 0);
    CHECK(cons_matcher_accept_bytes(m, "1", 1) == 0);
    CHECK(cons_matcher_accept_bytes(m, "x", 1) == -1);
    CHECK(cons_matcher_position(m) == 24);
    CHECK(cons_matcher_accept_bytes(m, "}", 1) == 0);
    CHECK(cons_matcher_accepting(m) && !cons_matcher_can_continue(m));
    CHECK(cons_matcher_accept_token(m, 2) == 0);
    uint32_t mask[1];
    CHECK(cons_matcher_mask(m, mask) == 0 && mask[0] == 0);
    cons_matcher_free(m);
    /* a healing prefix comes first, then the language; forced runs through both */
    m = cons_matcher_new(p, v, "ab", 2, &err);
    n = cons_matcher_forced(m, buf, sizeof buf);
    CHECK(n == 12 && memcmp(buf, "ab{\"name\": \"", 12) == 0);
    CHECK(!cons_matcher_accepting(m));
    CHECK(cons_matcher_mask(m, mask) == 1 && mask[0] == 1); /* "a" only */
    CHECK(cons_matcher_accept_token(m, 1) == -1);
    CHECK(cons_matcher_accept_token(m, 0) == 0);
    CHECK(cons_matcher_accept_bytes(m, "b{", 2) == 0);
    cons_matcher_free(m);
    cons_program_release(p);
    /* p NULL: any bytes after the prefix */
    m = cons_matcher_new(NULL, v, "b", 1, &err);
    CHECK(cons_matcher_mask(m, mask) == 1 && mask[0] == 2);
    CHECK(cons_matcher_accept_token(m, 1) == 0);
    CHECK(cons_matcher_accepting(m));
    CHECK(cons_matcher_mask(m, mask) == 3);
    cons_matcher_free(m);
    cons_vocab_free(v);
}

static const char *json_gbnf =
    "# JSON values, recursive\n"
    "root   ::= value\n"
    "value  ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
    "object ::= \"{\" ws ( member ( \",\" ws member )* )? \"}\"\n"
    "member ::= string \":\" ws value ws\n"
    "array  ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x00-\\x1f] | \"\\\\\" [\"\\\\/bfnrt] )* \"\\\"\"\n"
    "number ::= \"-\"? ( \"0\" | [1-9] [0-9]* ) ( \".\" [0-9]+ )?\n"
    "ws     ::= [ \\t\\n]{0,2}\n";

typedef struct gcase {
    const char *grammar, *text;
    int match;
} gcase;

static const gcase grammar_cases[] = {
    {NULL, "{\"a\": [1, 2.5, {\"b\": null}], \"c\": \"x\\\"y\"}", 1},
    {NULL, "[[[[[]]]]]", 1},
    {NULL, "[[[[[]]]]", 0},
    {NULL, "{\"a\" 1}", 0},
    {NULL, "-0.5", 1},
    {NULL, "01", 0},
    {"root ::= \"a\"* \"b\"", "aaab", 1},
    {"root ::= x\nx ::= \"(\" x \")\" | \"\"", "((()))", 1},
    {"root ::= x\nx ::= \"(\" x \")\" | \"\"", "(()", 0},
    {"root ::= x\nx ::= x \"a\" | \"b\"", "baaa", 1},
    {"root ::= x\nx ::= x \"a\" | \"b\"", "aab", 0},
    {"root ::= a b\na ::= \"x\"?\nb ::= a \"y\"", "xxy", 1},
    {"root ::= a b\na ::= \"x\"?\nb ::= a \"y\"", "y", 1},
    {"root ::= e\ne ::= e e | \"1\" | n\nn ::= \"\" | n", "111", 1},
    {"first ::= [a-c]{2,3} \"\xc3\xa9\" .", "ab\xc3\xa9\xe2\x82\xac", 1},
    {"first ::= [a-c]{2,3} \"\xc3\xa9\" .", "abcd\xc3\xa9!", 0},
    {"root ::= [^a-z\\]]+ 'q'", "AB9q", 1},
    {"root ::= [^a-z\\]]+ 'q'", "A]q", 0},
    {"root ::= \"\\x41\\u00e9\\n\"", "A\xc3\xa9\n", 1},
};

static void test_grammar(void) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(grammar_cases); i++) {
        const gcase *c = &grammar_cases[i];
        const char *g = c->grammar ? c->grammar : json_gbnf;
        cons_diag d;
        cons_program *p = compile(CONS_GRAMMAR, g, &d);
        CHECK_MSG(p != NULL, "grammar %zu: %s at %d:%d", i, d.message, d.line, d.col);
        if (!p) continue;
        int got = cons_program_match(p, c->text, strlen(c->text));
        CHECK_MSG(got == c->match, "grammar %zu on \"%s\": got %d", i, c->text, got);
        cons_program_release(p);
    }
    /* recursion runs on the recogniser, a grammar without it on a DFA */
    cons_diag d;
    cons_program *p = compile(CONS_GRAMMAR, json_gbnf, &d);
    CHECK(p && !cons_program_is_dfa(p));
    cons_program_release(p);
    p = compile(CONS_GRAMMAR, "root ::= a a\na ::= \"x\" | \"y\"", &d);
    CHECK(p && cons_program_is_dfa(p) && cons_program_match(p, "xy", 2));
    cons_program_release(p);
}

typedef struct gerr {
    const char *grammar;
    int line, col;
    const char *msg;
} gerr;

static const gerr grammar_errors[] = {
    {"root ::= a\na ::= \"x\" b", 2, 11, "undefined rule 'b'"},
    {"root ::= \"x\" (\n \"y\"", 1, 14, "expected ')'"},
    {"root ::= \"ab", 1, 10, "unterminated string"},
    {"root ::= [b-a]", 1, 10, "out of order"},
    {"root ::= [ab", 1, 10, "unterminated character class"},
    {"root ::= \"a\" root", 1, 1, "never match"},
    {"root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice"},
    {"\n\n  root = \"a\"", 3, 3, "expected '::='"},
    {"root ::= \"a\"{2", 1, 13, "missing '}'"},
    {"root ::= \"a\"{3,1}", 1, 13, "greater than"},
    {"root ::= \"a\"**", 1, 14, "multiple quantifiers"},
    {"root ::= \"\\q\"", 1, 11, "unknown escape"},
    {"root ::= )", 1, 10, "unmatched ')'"},
    {"# only a comment\n", 1, 1, "no rules"},
    {"root ::= \"\xc3\xa9\" | @", 1, 16, "expected a string"},
};

static void test_grammar_errors(void) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(grammar_errors); i++) {
        const gerr *e = &grammar_errors[i];
        cons_diag d;
        cons_program *p = compile(CONS_GRAMMAR, e->grammar, &d);
        CHECK_MSG(p == NULL, "grammar error %zu accepted", i);
        cons_program_release(p);
        if (p) continue;
        CHECK_MSG(d.line == e->line && d.col == e->col && strstr(d.message, e->msg),
                  "grammar error %zu: %d:%d %s (expected %d:%d %s)", i, d.line, d.col, d.message, e->line,
                  e->col, e->msg);
    }
}

/* The recogniser's forced bytes and rollback agree with probing. */
static void test_grammar_matcher(void) {
    const char *pieces[4] = {"{", "\"", "a", "}"};
    size_t lens[4] = {1, 1, 1, 1};
    int32_t eos = 3;
    sgl_error err;
    cons_vocab *v = cons_vocab_new(4, pieces, lens, NULL, &eos, 0, &err);
    cons_diag d;
    cons_program *p = compile(CONS_GRAMMAR, "root ::= \"{\\\"key\\\": \" v \"}\"\nv ::= \"[\" v? \"]\"", &d);
    CHECK(p && !cons_program_is_dfa(p));
    cons_matcher *m = cons_matcher_new(p, v, NULL, 0, &err);
    char buf[64];
    size_t n = cons_matcher_forced(m, buf, sizeof buf);
    CHECK(n == 9 && memcmp(buf, "{\"key\": [", 9) == 0);
    check_forced(m);
    CHECK(cons_matcher_accept_bytes(m, "{\"key\": [[", 10) == 0);
    CHECK(cons_matcher_accept_bytes(m, "]}", 2) == -1);
    CHECK(cons_matcher_accept_bytes(m, "]", 1) == 0);
    n = cons_matcher_forced(m, buf, sizeof buf);
    CHECK(n == 2 && memcmp(buf, "]}", 2) == 0);
    CHECK(cons_matcher_accept_bytes(m, "]", 1) == 0);
    n = cons_matcher_forced(m, buf, sizeof buf);
    CHECK(n == 1 && buf[0] == '}');
    n = cons_matcher_complete(m, buf, sizeof buf);
    CHECK(n == 1 && buf[0] == '}');
    CHECK(cons_matcher_accept_bytes(m, "}", 1) == 0 && cons_matcher_accepting(m));
    cons_matcher_free(m);
    cons_program_release(p);
    cons_vocab_free(v);
}

/* Long length bounds make large but narrow DFAs (~14 states per character
 * of a JSON string): they are determinised lazily, so compiling builds a
 * fraction of the states, and matching stays exact at the bounds. */
static void test_lazy(void) {
    const char *schema = "{\"type\":\"object\",\"properties\":{\"bullets\":{\"type\":\"array\","
                         "\"items\":{\"type\":\"string\",\"maxLength\":200},\"minItems\":1,"
                         "\"maxItems\":5}},\"required\":[\"bullets\"]}";
    cons_diag d;
    cons_program *p = compile(CONS_JSON_SCHEMA, schema, &d);
    CHECK_MSG(p != NULL, "%s", d.message);
    if (!p) return;
    int32_t at_compile = cons_program_states(p);
    CHECK_MSG(cons_program_is_dfa(p) && at_compile < 5000, "%d states built at compile", at_compile);
    sgl_strbuf sb = {0};
    for (int items = 1; items <= 6; items++)
        for (int len = 198; len <= 201; len++) {
            sb.len = 0;
            sgl_strbuf_append(&sb, "{\"bullets\":[", 12);
            for (int i = 0; i < items; i++) {
                if (i) sgl_strbuf_append(&sb, ",", 1);
                sgl_strbuf_append(&sb, "\"", 1);
                for (int k = 0; k < len; k++)
                    sgl_strbuf_append(&sb, k % 7 == 3 ? "\xc3\xa9" : k % 11 == 5 ? "\\n" : "x",
                                      k % 7 == 3 || k % 11 == 5 ? 2 : 1);
                sgl_strbuf_append(&sb, "\"", 1);
            }
            sgl_strbuf_append(&sb, "]}", 2);
            int want = items <= 5 && len <= 200;
            CHECK_MSG(cons_program_match(p, sb.data, sb.len) == want, "%d items of %d characters", items, len);
        }
    /* forced bytes and a shortest completion on states built on demand */
    const char *pieces[2] = {"x", "\""};
    size_t lens[2] = {1, 1};
    int32_t eos = 0;
    sgl_error err;
    cons_vocab *v = cons_vocab_new(2, pieces, lens, (const bool[]){true, false}, &eos, 1, &err);
    cons_matcher *m = v ? cons_matcher_new(p, v, NULL, 0, &err) : NULL;
    CHECK(m != NULL);
    if (m) {
        char buf[64];
        size_t n = cons_matcher_forced(m, buf, sizeof buf);
        CHECK(n == 13 && memcmp(buf, "{\"bullets\":[\"", 13) == 0);
        CHECK(cons_matcher_accept_bytes(m, buf, n) == 0);
        uint32_t mask[1];
        CHECK(cons_matcher_mask(m, mask) == 1 && mask[0] == 2u); /* '"' only: x is special */
        CHECK(cons_matcher_accept_bytes(m, "abc", 3) == 0);
        n = cons_matcher_complete(m, buf, sizeof buf);
        CHECK(n == 3 && memcmp(buf, "\"]}", 3) == 0);
    }
    cons_matcher_free(m);
    cons_vocab_free(v);
    sgl_strbuf_free(&sb);
    CHECK(cons_program_states(p) > at_compile);
    cons_program_release(p);
    /* an exponential blow-up is still refused whole by the budget */
    CHECK(compile(CONS_REGEX, "[ab]*a[ab]{24}", &d) == NULL && strstr(d.message, "max_states = 20000"));
}

int main(void) {
    TEST_RUN(test_grammar);
    TEST_RUN(test_grammar_errors);
    TEST_RUN(test_grammar_matcher);
    TEST_RUN(test_regex_match);
    TEST_RUN(test_regex_errors);
    TEST_RUN(test_minimal);
    TEST_RUN(test_lazy);
    TEST_RUN(test_choices);
    TEST_RUN(test_cache);
    TEST_RUN(test_forced);
    return TEST_DONE();
}
