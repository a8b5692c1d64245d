/* test_value: SGVM values: refcounting (no leaks), lists, maps (order,
 * numeric key equality, replacement), operators per docs/language.md §6,
 * str()/repr, JSON round trips and parse errors. */
#include <string.h>

#include "tests/test.h"
#include "vm/value.h"

static vm_value S(const char *s) { return vm_str_from(s); }

/* str(v) into a static buffer (tests only). */
static const char *show(vm_value v) {
    static char buf[4096];
    sgl_strbuf sb = {0};
    vm_str_append(&sb, v);
    snprintf(buf, sizeof buf, "%s", sb.data ? sb.data : "");
    sgl_strbuf_free(&sb);
    return buf;
}

static const char *dumps(vm_value v, bool compact) {
    static char buf[4096];
    sgl_strbuf sb = {0};
    sgl_error err = {{0}};
    if (vm_json_dump(&sb, v, compact, &err) < 0) snprintf(buf, sizeof buf, "ERR %s", err.msg);
    else snprintf(buf, sizeof buf, "%s", sb.data ? sb.data : "");
    sgl_strbuf_free(&sb);
    return buf;
}

static void test_scalars_and_str(void) {
    int64_t live = vm_live_objects();
    CHECK_STR(show(vm_none()), "null");
    CHECK_STR(show(vm_bool(true)), "true");
    CHECK_STR(show(vm_int(-42)), "-42");
    CHECK_STR(show(vm_float(2.5)), "2.5");
    CHECK_STR(show(vm_float(3.0)), "3.0");
    CHECK_STR(show(vm_float(0.1)), "0.1");
    CHECK_STR(show(vm_float(1e300)), "1e+300");
    vm_value s = S("h\"i\n");
    CHECK_STR(show(s), "h\"i\n");
    sgl_strbuf sb = {0};
    vm_repr_append(&sb, s);
    CHECK_STR(sb.data, "\"h\\\"i\\n\"");
    sgl_strbuf_free(&sb);
    vm_release(s);
    CHECK_INT(vm_live_objects(), live);
    CHECK(!vm_truthy(vm_none()) && !vm_truthy(vm_int(0)) && vm_truthy(vm_float(0.5)));
    vm_value e = S("");
    CHECK(!vm_truthy(e));
    vm_release(e);
}

static void test_list_map(void) {
    int64_t live = vm_live_objects();
    vm_value l = vm_list_new(0);
    for (int i = 0; i < 10; i++) CHECK_INT(vm_list_push(l, vm_int(i)), 0);
    vm_list_push(l, S("x"));
    CHECK_INT(vm_list_len(l), 11);
    CHECK_INT(vm_list_get(l, 3).as.i, 3);
    vm_value m = vm_map_new();
    sgl_error err = {{0}};
    CHECK_INT(vm_map_set(m, S("b"), vm_int(1), &err), 0);
    CHECK_INT(vm_map_set(m, S("a"), vm_int(2), &err), 0);
    CHECK_INT(vm_map_set(m, vm_int(1), S("one"), &err), 0);
    /* 1.0 is the same key as 1: replaced in place. */
    CHECK_INT(vm_map_set(m, vm_float(1.0), S("uno"), &err), 0);
    CHECK_INT(vm_map_set(m, S("b"), l, &err), 0); /* consumes l */
    CHECK_INT(vm_map_len(m), 3);
    CHECK_STR(show(*vm_map_get(m, vm_int(1))), "uno");
    CHECK_STR(dumps(m, false), "{\"b\": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \"x\"], \"a\": 2, \"1\": \"uno\"}");
    CHECK(vm_map_get_cstr(m, "zz") == NULL);
    CHECK_INT(vm_map_get_cstr(m, "a")->as.i, 2);
    /* A list key is refused and the passed values are released. */
    CHECK_INT(vm_map_set(m, vm_list_new(0), S("v"), &err), -1);
    CHECK(strstr(err.msg, "unhashable") != NULL);
    /* Many keys: growth keeps order and lookups. */
    for (int i = 0; i < 1000; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        vm_map_set_cstr(m, k, vm_int(i), &err);
    }
    CHECK_INT(vm_map_len(m), 1003);
    CHECK_INT(vm_map_get_cstr(m, "k777")->as.i, 777);
    CHECK_STR(show(m.as.m->entries[503].key), "k500");
    vm_release(m);
    CHECK_INT(vm_live_objects(), live);
}

static int arith(sgl_op op, vm_value a, vm_value b, vm_value *out, char *msg) {
    sgl_error err = {{0}};
    int rc = vm_arith(op, a, b, out, &err);
    if (msg) strcpy(msg, err.msg);
    return rc;
}

static void test_operators(void) {
    int64_t live = vm_live_objects();
    vm_value r;
    char msg[1024];
    CHECK_INT(arith(SGL_OP_ADD, vm_int(2), vm_int(3), &r, NULL), 0);
    CHECK(r.type == VM_INT && r.as.i == 5);
    CHECK_INT(arith(SGL_OP_DIV, vm_int(7), vm_int(2), &r, NULL), 0);
    CHECK(r.type == VM_INT && r.as.i == 3);
    CHECK_INT(arith(SGL_OP_DIV, vm_int(-7), vm_int(2), &r, NULL), 0);
    CHECK_INT(r.as.i, -3);
    CHECK_INT(arith(SGL_OP_MOD, vm_int(-7), vm_int(3), &r, NULL), 0);
    CHECK_INT(r.as.i, -1);
    CHECK_INT(arith(SGL_OP_DIV, vm_float(1), vm_int(4), &r, NULL), 0);
    CHECK(r.type == VM_FLOAT && r.as.f == 0.25);
    CHECK_INT(arith(SGL_OP_DIV, vm_int(1), vm_int(0), &r, msg), -1);
    CHECK_STR(msg, "division by zero");
    CHECK_INT(arith(SGL_OP_MUL, vm_int(INT64_MAX), vm_int(2), &r, msg), -1);
    CHECK_STR(msg, "integer overflow in *");
    vm_value a = S("ab"), b = S("cd");
    CHECK_INT(arith(SGL_OP_ADD, a, b, &r, NULL), 0);
    CHECK_STR(vm_str_cstr(r), "abcd");
    vm_release(r);
    CHECK_INT(arith(SGL_OP_MUL, a, vm_int(3), &r, NULL), 0);
    CHECK_STR(vm_str_cstr(r), "ababab");
    vm_release(r);
    CHECK_INT(arith(SGL_OP_ADD, a, vm_int(1), &r, msg), -1);
    CHECK_STR(msg, "unsupported operand types for +: 'str' and 'int'");
    bool t;
    sgl_error err = {{0}};
    CHECK_INT(vm_compare(SGL_OP_LT, a, b, &t, &err), 0);
    CHECK(t);
    CHECK_INT(vm_compare(SGL_OP_EQ, vm_int(1), vm_float(1.0), &t, &err), 0);
    CHECK(t);
    CHECK_INT(vm_compare(SGL_OP_LT, a, vm_int(1), &t, &err), -1);
    CHECK_STR(err.msg, "'<' not supported between 'str' and 'int'");
    vm_value sub = S("b");
    CHECK_INT(vm_contains(a, sub, &t, &err), 0);
    CHECK(t);
    vm_release(sub);
    /* Map merge: right side wins, left order kept. */
    vm_value m1 = vm_map_new(), m2 = vm_map_new();
    vm_map_set_cstr(m1, "x", vm_int(1), NULL);
    vm_map_set_cstr(m1, "y", vm_int(2), NULL);
    vm_map_set_cstr(m2, "y", vm_int(3), NULL);
    vm_map_set_cstr(m2, "z", vm_int(4), NULL);
    CHECK_INT(arith(SGL_OP_ADD, m1, m2, &r, NULL), 0);
    CHECK_STR(dumps(r, true), "{\"x\":1,\"y\":3,\"z\":4}");
    vm_release(r);
    /* Indexing. */
    vm_value l = vm_list_new(0);
    vm_list_push(l, vm_int(10));
    vm_list_push(l, vm_int(20));
    CHECK_INT(vm_index_get(l, vm_int(-1), &r, &err), 0);
    CHECK_INT(r.as.i, 20);
    CHECK_INT(vm_index_get(l, vm_int(2), &r, &err), -1);
    CHECK_STR(err.msg, "list index 2 out of range (length 2)");
    vm_value key = S("nope");
    CHECK_INT(vm_index_get(m1, key, &r, &err), -1);
    CHECK_STR(err.msg, "key \"nope\" not found in map");
    CHECK_INT(vm_index_set(l, vm_int(0), S("new"), &err), 0);
    CHECK_STR(show(l), "[\"new\", 20]");
    vm_release(key);
    vm_release(l);
    vm_release(m1);
    vm_release(m2);
    vm_release(a);
    vm_release(b);
    CHECK_INT(vm_live_objects(), live);
}

static void test_json(void) {
    int64_t live = vm_live_objects();
    const char *txt = "{\"a\": [1, 2.5, -3e2, true, null], \"b\": {\"c\": \"\\u00e9\\n\\ud83d\\ude00\"}, \"d\": 1.0}";
    vm_value v;
    sgl_error err = {{0}};
    CHECK_INT(vm_json_parse(txt, strlen(txt), &v, &err), 0);
    vm_value *a = vm_map_get_cstr(v, "a");
    CHECK(a && a->type == VM_LIST && vm_list_get(*a, 0).type == VM_INT);
    CHECK(vm_list_get(*a, 2).type == VM_FLOAT && vm_list_get(*a, 2).as.f == -300.0);
    CHECK(vm_map_get_cstr(v, "d")->type == VM_FLOAT);
    CHECK_STR(dumps(v, true),
              "{\"a\":[1,2.5,-300.0,true,null],\"b\":{\"c\":\"\xc3\xa9\\n\xf0\x9f\x98\x80\"},\"d\":1.0}");
    /* Invalid UTF-8 (a character cut short, a stray continuation byte)
     * becomes U+FFFD, so the text stays valid JSON; valid characters stay. */
    vm_value bad = vm_str_new("x\xc3\xa9\xe2\x82|\x80y", 8);
    CHECK_STR(dumps(bad, true), "\"x\xc3\xa9\xef\xbf\xbd|\xef\xbf\xbdy\"");
    vm_release(bad);
    /* Round trip. */
    sgl_strbuf sb = {0};
    vm_json_dump(&sb, v, false, &err);
    vm_value v2;
    CHECK_INT(vm_json_parse(sb.data, sb.len, &v2, &err), 0);
    CHECK(vm_equal(v, v2));
    sgl_strbuf_free(&sb);
    vm_release(v2);
    vm_release(v);
    CHECK_INT(vm_json_parse("[1, 2", 5, &v, &err), -1);
    CHECK_STR(err.msg, "json: line 1 col 6: expected ',' or ']'");
    CHECK_INT(vm_json_parse("{\"a\":1}\n x", 10, &v, &err), -1);
    CHECK_STR(err.msg, "json: line 2 col 2: trailing characters after the value");
    CHECK_INT(vm_json_parse("[01]", 4, &v, &err), -1);
    CHECK_INT(vm_json_parse("\"a\tb\"", 5, &v, &err), -1);
    CHECK(strstr(err.msg, "control character") != NULL);
    CHECK_INT(vm_json_parse("123456789012345678901234", 24, &v, &err), 0);
    CHECK(v.type == VM_FLOAT);
    CHECK_INT(vm_live_objects(), live);
}

static void test_iter(void) {
    int64_t live = vm_live_objects();
    vm_value s = S("a\xc3\xa9z"), it, item;
    sgl_error err = {{0}};
    CHECK_INT(vm_iter_new(s, &it, &err), 0);
    int n = 0;
    while (vm_iter_next(it, &item)) {
        if (n == 1) CHECK_STR(vm_str_cstr(item), "\xc3\xa9");
        vm_release(item);
        n++;
    }
    CHECK_INT(n, 3);
    vm_release(it);
    vm_release(s);
    CHECK_INT(vm_iter_new(vm_int(3), &it, &err), -1);
    CHECK_STR(err.msg, "'int' value is not iterable");
    CHECK_INT(vm_live_objects(), live);
}

/* A list nested depth deep around leaf: [[...[leaf]...]]. */
static vm_value nest(int depth, vm_value leaf) {
    vm_value v = leaf;
    for (int i = 0; i < depth; i++) {
        vm_value l = vm_list_new(1);
        vm_list_push(l, v);
        v = l;
    }
    return v;
}

static bool eq(vm_value a, vm_value b, sgl_op op) {
    bool r = false;
    sgl_error err = {{0}};
    CHECK_INT(vm_compare(op, a, b, &r, &err), 0);
    return r;
}

/* Values of any depth: no C recursion, no depth cut-off giving a wrong
 * answer (== at 201 used to be false). */
static void test_deep(void) {
    int64_t live = vm_live_objects();
    static const int depths[] = {201, 10000};
    for (size_t k = 0; k < SGL_ARRAY_LEN(depths); k++) {
        vm_value a = nest(depths[k], vm_int(1)), b = nest(depths[k], vm_int(1));
        vm_value c = nest(depths[k], vm_int(2));
        CHECK(eq(a, b, SGL_OP_EQ));
        CHECK(!eq(a, b, SGL_OP_NE));
        CHECK(!eq(a, c, SGL_OP_EQ));
        CHECK(eq(a, c, SGL_OP_LT) && !eq(c, a, SGL_OP_LT) && eq(a, b, SGL_OP_GE));
        vm_value d = vm_deep_copy(a);
        CHECK(d.as.l != a.as.l && eq(a, d, SGL_OP_EQ));
        vm_release(a), vm_release(b), vm_release(c), vm_release(d);
    }
    /* A million levels: compared, printed, dumped, copied and freed. */
    const int n = 1000000;
    vm_value a = nest(n, vm_str_from("x")), b = nest(n, vm_str_from("x"));
    CHECK(eq(a, b, SGL_OP_EQ));
    CHECK(!eq(a, b, SGL_OP_LT));
    sgl_strbuf sb = {0};
    CHECK_INT(vm_str_append(&sb, a), 0);
    CHECK_INT((int64_t)sb.len, 2 * n + 3);
    CHECK(sb.len > 4 && !memcmp(sb.data, "[[[[", 4) && !memcmp(sb.data + n, "\"x\"", 3) &&
          sb.data[sb.len - 1] == ']');
    sgl_strbuf_clear(&sb);
    sgl_error err = {{0}};
    CHECK_INT(vm_json_dump(&sb, b, true, &err), 0);
    CHECK_INT((int64_t)sb.len, 2 * n + 3);
    sgl_strbuf_free(&sb);
    vm_value c = vm_deep_copy(a);
    CHECK(c.type == VM_LIST && eq(a, c, SGL_OP_EQ));
    vm_value m = vm_map_new();
    vm_map_set_cstr(m, "deep", c, NULL);
    vm_release(m);
    vm_release(a);
    vm_release(b);
    CHECK_INT(vm_live_objects(), live);
    /* The JSON reader refuses past its documented limit, with a location. */
    sgl_strbuf js = {0};
    for (int i = 0; i <= VM_JSON_MAX_DEPTH; i++) sgl_strbuf_putc(&js, '[');
    vm_value out;
    CHECK_INT(vm_json_parse(js.data, js.len, &out, &err), -1);
    CHECK(strstr(err.msg, "nested too deeply") != NULL);
    sgl_strbuf_free(&js);
    CHECK_INT(vm_live_objects(), live);
}

int main(void) {
    TEST_RUN(test_scalars_and_str);
    TEST_RUN(test_list_map);
    TEST_RUN(test_operators);
    TEST_RUN(test_json);
    TEST_RUN(test_iter);
    TEST_RUN(test_deep);
    return TEST_DONE();
}
