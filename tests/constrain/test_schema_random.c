/* test_schema_random.c: property test of JSON-schema constraints.
 *
 * A seeded generator writes random schemas (every supported keyword, nested
 * objects and arrays, $ref, recursion); each is compiled and sampled by
 * random token walks under the mask (seeded random choices among the allowed
 * tokens, jump-forward now and then) on the tiny model's vocabulary. Walks
 * that end with EOS are "complete"; walks stopped by length are completed
 * along the constraint (greedy bytes, probed) to show they are a prefix of a
 * valid text. Every text is then validated by the Python `jsonschema`
 * package (validate_schema.py). Also: unsupported keywords and bad schemas
 * are refused with the keyword's JSON pointer.
 * Usage: test_schema_random TINY.gguf   (SGL_SOURCE_ROOT names the source tree;
 * SGL_TEST_SEED picks another seed) */
#include <cjson/cJSON.h>

#include "tests/constrain/cons_test_util.h"
#include "tests/test.h"

static cons_vocab *V;
static sgl_tokenizer *TOK;
static uint64_t rng = 0xC0FFEE;

static int rnd(int n) { return (int)(ctu_rand(&rng) % (uint64_t)n); }

static const char *formats[] = {"date", "time", "date-time", "email", "uuid", "ipv4", "uri"};
static const char *patterns[] = {"^[a-z]{2,5}$", "\\d{3}-\\d{4}", "(ab|cd)+x?", "[A-Z][a-z]*( [A-Z][a-z]*)?"};

static cJSON *gen_schema(int depth);

static cJSON *gen_scalar(int kind) {
    cJSON *s = cJSON_CreateObject();
    switch (kind) {
    case 0:
        cJSON_AddStringToObject(s, "type", "string");
        if (rnd(2)) {
            int mn = rnd(4);
            cJSON_AddNumberToObject(s, "minLength", mn);
            if (rnd(2)) cJSON_AddNumberToObject(s, "maxLength", mn + rnd(8));
        }
        break;
    case 1:
        cJSON_AddStringToObject(s, "type", "string");
        cJSON_AddStringToObject(s, "format", formats[rnd(7)]);
        break;
    case 2:
        cJSON_AddStringToObject(s, "type", "string");
        cJSON_AddStringToObject(s, "pattern", patterns[rnd(4)]);
        break;
    case 3:
    case 4: {
        cJSON_AddStringToObject(s, "type", kind == 3 ? "integer" : "number");
        int lo = rnd(2000) - 1000, hi = lo + rnd(3000);
        if (rnd(2)) cJSON_AddNumberToObject(s, rnd(3) ? "minimum" : "exclusiveMinimum", lo);
        if (rnd(2)) cJSON_AddNumberToObject(s, rnd(3) ? "maximum" : "exclusiveMaximum", hi);
        break;
    }
    case 5: cJSON_AddStringToObject(s, "type", rnd(2) ? "boolean" : "null"); break;
    case 6: {
        cJSON *e = cJSON_AddArrayToObject(s, "enum");
        int n = 1 + rnd(4);
        for (int i = 0; i < n; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, "v%d \"q\" \xc3\xa9", rnd(100));
            cJSON_AddItemToArray(e, rnd(3) ? cJSON_CreateString(buf) : rnd(2) ? cJSON_CreateNumber(rnd(50) - 7)
                                                                              : cJSON_CreateNull());
        }
        break;
    }
    default: cJSON_AddNumberToObject(s, "const", rnd(1000) / 8.0); break;
    }
    return s;
}

static cJSON *gen_schema(int depth) {
    int k = rnd(depth > 0 ? 12 : 8);
    if (k < 8) return gen_scalar(k);
    cJSON *s = cJSON_CreateObject();
    if (k == 8) {
        cJSON_AddStringToObject(s, "type", "object");
        cJSON *props = cJSON_AddObjectToObject(s, "properties");
        cJSON *req = cJSON_CreateArray();
        int n = 1 + rnd(4);
        for (int i = 0; i < n; i++) {
            char name[16];
            snprintf(name, sizeof name, "p%d_%c", i, 'a' + rnd(26));
            cJSON_AddItemToObject(props, name, gen_schema(depth - 1));
            if (rnd(2)) cJSON_AddItemToArray(req, cJSON_CreateString(name));
        }
        cJSON_AddItemToObject(s, "required", req);
        if (rnd(2)) cJSON_AddBoolToObject(s, "additionalProperties", false);
    } else if (k == 9) {
        cJSON_AddStringToObject(s, "type", "array");
        if (rnd(3) == 0) {
            cJSON *pre = cJSON_AddArrayToObject(s, "prefixItems");
            int n = 1 + rnd(3);
            for (int i = 0; i < n; i++) cJSON_AddItemToArray(pre, gen_schema(depth - 1));
            if (rnd(2)) cJSON_AddBoolToObject(s, "items", false);
        } else {
            cJSON_AddItemToObject(s, "items", gen_schema(depth - 1));
        }
        int mn = rnd(3);
        if (rnd(2) && !cJSON_IsFalse(cJSON_GetObjectItem(s, "items"))) cJSON_AddNumberToObject(s, "minItems", mn);
        if (rnd(2)) cJSON_AddNumberToObject(s, "maxItems", mn + rnd(4));
    } else if (k == 10) {
        /* alternatives of distinct types, so anyOf and oneOf agree */
        cJSON *alts = cJSON_AddArrayToObject(s, rnd(2) ? "anyOf" : "oneOf");
        cJSON_AddItemToArray(alts, gen_scalar(0));
        cJSON_AddItemToArray(alts, gen_scalar(3));
        cJSON *n = cJSON_CreateObject();
        cJSON_AddStringToObject(n, "type", "null");
        if (rnd(2)) cJSON_AddItemToArray(alts, n);
        else cJSON_Delete(n);
    } else {
        cJSON *t = cJSON_AddArrayToObject(s, "type");
        cJSON_AddItemToArray(t, cJSON_CreateString(rnd(2) ? "string" : "integer"));
        cJSON_AddItemToArray(t, cJSON_CreateString("null"));
        cJSON_AddNumberToObject(s, "maxLength", 6);
    }
    return s;
}

/* Wraps some schemas in $defs / $ref, some recursive. */
static cJSON *gen_root(int i) {
    if (i % 5 == 3) {
        cJSON *s = cJSON_CreateObject(), *defs = cJSON_AddObjectToObject(s, "$defs");
        cJSON_AddItemToObject(defs, "item", gen_schema(1));
        cJSON_AddStringToObject(s, "type", "object");
        cJSON *props = cJSON_AddObjectToObject(s, "properties");
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "$ref", "#/$defs/item");
        cJSON_AddItemToObject(props, "first", r);
        cJSON *arr = cJSON_CreateObject();
        cJSON_AddStringToObject(arr, "type", "array");
        cJSON *r2 = cJSON_CreateObject();
        cJSON_AddStringToObject(r2, "$ref", "#/$defs/item");
        cJSON_AddItemToObject(arr, "items", r2);
        cJSON_AddNumberToObject(arr, "maxItems", 3);
        cJSON_AddItemToObject(props, "rest", arr);
        return s;
    }
    if (i % 5 == 4) {
        const char *tree = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
                           "\"maxLength\":4},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},"
                           "\"maxItems\":2}},\"required\":[\"name\"],\"additionalProperties\":false}},"
                           "\"$ref\":\"#/$defs/node\"}";
        return cJSON_Parse(tree);
    }
    return gen_schema(2 + rnd(2));
}

/* Completes a cut output along the constraint (cons_matcher_complete) and
 * checks the completion is accepted. */
static bool complete(cons_matcher *m, sgl_strbuf *out) {
    char buf[8192];
    size_t n = cons_matcher_complete(m, buf, sizeof buf);
    if (n == (size_t)-1 || cons_matcher_accept_bytes(m, buf, n)) return false;
    sgl_strbuf_append(out, buf, n);
    return cons_matcher_accepting(m);
}

/* Longest run of whitespace outside JSON strings. */
static int ws_run(const char *t, size_t n) {
    int run = 0, best = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = false;
            continue;
        }
        if (ch == '"') in_str = true;
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (++run > best) best = run;
        } else {
            run = 0;
        }
    }
    return best;
}

static void test_random_schemas(void) {
    const char *root = getenv("SGL_SOURCE_ROOT");
    char path[512], cmd[1200];
    snprintf(path, sizeof path, "/tmp/sgl_schema_random_%d.jsonl", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    size_t words = cons_mask_words(V);
    uint32_t *mask = malloc(words * 4);
    int n_complete = 0, n_cut = 0, n_earley = 0;
    for (int i = 0; i < 60; i++) {
        cJSON *schema = gen_root(i);
        char *text = cJSON_PrintUnformatted(schema);
        cons_diag d;
        cons_options o = cons_options_default();
        o.ws_flexible = i % 3 == 0;
        cons_program *p = cons_compile(CONS_JSON_SCHEMA, text, strlen(text), &o, &d);
        CHECK_MSG(p != NULL, "schema %s: %s at %s", text, d.message, d.pointer);
        if (p) n_earley += !cons_program_is_dfa(p);
        for (int w = 0; p && w < 3; w++) {
            sgl_error err;
            cons_matcher *m = cons_matcher_new(p, V, NULL, 0, &err);
            sgl_strbuf out = {0};
            bool eos = false;
            int limit = w >= 1 ? 4 + rnd(30) : 400;
            for (int step = 0; step < limit; step++) {
                char fb[128];
                size_t nf = cons_matcher_forced(m, fb, sizeof fb);
                if (nf && rnd(2)) {
                    CHECK(cons_matcher_accept_bytes(m, fb, nf) == 0);
                    sgl_strbuf_append(&out, fb, nf);
                    continue;
                }
                int32_t n = cons_matcher_mask(m, mask);
                CHECK_MSG(n > 0, "dead end after \"%s\" in %s", out.data ? out.data : "", text);
                if (n <= 0) break;
                int32_t t = -1;
                bool eos_ok = cons_matcher_accepting(m);
                if (eos_ok && rnd(3) == 0) {
                    eos = true;
                    break;
                }
                int32_t pick = rnd(n);
                for (int32_t id = 0; id < cons_vocab_size(V); id++)
                    if ((mask[id >> 5] >> (id & 31)) & 1 && pick-- == 0) {
                        t = id;
                        break;
                    }
                if (tok_is_eog(TOK, t)) {
                    eos = true;
                    break;
                }
                size_t len;
                const char *piece = tok_piece(TOK, t, &len);
                CHECK(cons_matcher_accept_token(m, t) == 0);
                sgl_strbuf_append(&out, piece, len);
            }
            if (!eos) {
                bool ok = complete(m, &out);
                CHECK_MSG(ok, "could not complete \"%s\" in %s", out.data, text);
                n_cut++;
            } else {
                n_complete++;
            }
            CHECK(cons_program_match(p, out.data ? out.data : "", out.len));
            /* whitespace never runs longer than the policy allows */
            CHECK_MSG(ws_run(out.data ? out.data : "", out.len) <= (o.ws_flexible ? o.ws_max : 0),
                      "whitespace run in \"%s\"", out.data ? out.data : "");
            cJSON *line = cJSON_CreateObject();
            cJSON_AddItemToObject(line, "schema", cJSON_Duplicate(schema, true));
            cJSON_AddItemToObject(line, "text", cJSON_CreateString(out.data ? out.data : ""));
            cJSON_AddStringToObject(line, "kind", eos ? "complete" : "cut");
            char *l = cJSON_PrintUnformatted(line);
            fprintf(f, "%s\n", l);
            free(l);
            cJSON_Delete(line);
            sgl_strbuf_free(&out);
            cons_matcher_free(m);
        }
        cons_program_release(p);
        free(text);
        cJSON_Delete(schema);
    }
    fclose(f);
    free(mask);
    printf("%d complete, %d cut outputs; %d schemas ran on the Earley recogniser\n", n_complete, n_cut, n_earley);
    CHECK(n_complete > 20 && n_cut > 20 && n_earley > 0);
    snprintf(cmd, sizeof cmd, "%s/.venv/bin/python %s/tests/constrain/validate_schema.py %s", root ? root : ".",
             root ? root : ".", path);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "validate_schema.py failed (%d)", rc);
    if (rc == 0) remove(path);
}

typedef struct bad {
    const char *schema, *pointer, *msg;
} bad;

static const bad bad_schemas[] = {
    {"{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"uniqueItems\":true}", "/uniqueItems", "uniqueItems"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"contentEncoding\":\"base64\"}}}",
     "/properties/a/contentEncoding", "contentEncoding"},
    {"{\"properties\":{\"a/b\":{\"not\":{}}}}", "/properties/a~1b/not", "'not'"},
    {"{\"type\":\"string\",\"format\":\"hostname\"}", "/format", "hostname"},
    {"{\"type\":\"strin\"}", "/type", "unknown type"},
    {"{\"$ref\":\"#/$defs/missing\"}", "/$ref", "does not exist"},
    {"{\"$ref\":\"http://x/y\"}", "/$ref", "local"},
    {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "", "no value"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "/required/0", "'b'"},
    {"{\"type\":\"string\",\"pattern\":\"(ab\"}", "/pattern", "unterminated group"},
    {"{\"allOf\":[{\"type\":\"string\"}]}", "/allOf", "allOf"},
    {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "", "never match"},
    {"false", "", "matches nothing"},
};

static void test_bad_schemas(void) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(bad_schemas); i++) {
        cons_diag d;
        const char *s = bad_schemas[i].schema;
        cons_program *p = cons_compile(CONS_JSON_SCHEMA, s, strlen(s), NULL, &d);
        CHECK_MSG(p == NULL, "%s should be refused", s);
        cons_program_release(p);
        if (p) continue;
        CHECK_MSG(strcmp(d.pointer, bad_schemas[i].pointer) == 0, "%s: pointer \"%s\", expected \"%s\" (%s)", s,
                  d.pointer, bad_schemas[i].pointer, d.message);
        CHECK_MSG(strstr(d.message, bad_schemas[i].msg) != NULL, "%s: message \"%s\" lacks \"%s\"", s, d.message,
                  bad_schemas[i].msg);
    }
    cons_diag d;
    CHECK(cons_compile(CONS_JSON_SCHEMA, "{\"type\":\n \"string\"", 19, NULL, &d) == NULL);
    CHECK(strstr(d.message, "invalid JSON") && d.line == 2);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (getenv("SGL_TEST_SEED")) rng = strtoull(getenv("SGL_TEST_SEED"), NULL, 0) | 1;
    V = ctu_load_vocab(argv[1], &TOK);
    if (!V) return 1;
    TEST_RUN(test_bad_schemas);
    TEST_RUN(test_random_schemas);
    cons_vocab_free(V);
    tok_free(TOK);
    return TEST_DONE();
}
