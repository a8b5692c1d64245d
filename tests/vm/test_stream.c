/* test_stream: streams + link against the fake engine: queued appends keep
 * program order around a pending gen, readers park and are woken, roles use
 * the chat template, fork prefills once and batches its branches, join
 * gathers, select follows SGLang's three scoring methods, and an engine
 * failure fails the stream (and its group) with the message. */
#include <string.h>

#include "runtime/chat_template.h"
#include "tests/test.h"
#include "vm/fake_engine.h"
#include "vm/link.h"
#include "vm/stream.h"

static int n_woken;
static void *last_woken;
static void waker(void *ctx, void *fiber) {
    (void)ctx;
    n_woken++;
    last_woken = fiber;
}

typedef struct env {
    sgl_engine *engine;
    vm_fake *fake;
    chat_template *ct;
    vm_link *link;
    vm_group *group;
} env;

static void env_init(env *e) {
    memset(e, 0, sizeof *e);
    e->engine = vm_fake_engine_new(&e->fake);
    e->ct = chat_template_from_family("chatml", NULL);
    e->link = vm_link_new(e->engine, e->ct);
    vm_link_set_waker(e->link, waker, NULL);
    e->group = vm_group_new();
    n_woken = 0;
}

static void env_free(env *e) {
    vm_link_free(e->link);
    vm_group_release(e->group);
    chat_template_free(e->ct);
    sgl_engine_free(e->engine);
}

/* Runs flush + wait rounds until nothing is outstanding. */
static void drain(env *e) {
    for (int i = 0; i < 100 && vm_link_outstanding(e->link); i++) {
        vm_link_flush(e->link);
        vm_link_wait(e->link, 0);
    }
}

static vm_gen_args *gen_args(const char *name, const char *stop) {
    vm_gen_args *a = vm_gen_args_new();
    a->name = name ? sgl_strdup(name) : NULL;
    if (stop) {
        a->stop = calloc(1, sizeof(char *));
        a->stop[0] = sgl_strdup(stop);
        a->n_stop = 1;
    }
    return a;
}

static void test_gen_order_and_wait(void) {
    int64_t live = vm_live_objects();
    env e;
    env_init(&e);
    vm_fake_add_rule(e.fake, "A:", " hello\nmore", NULL);
    vm_value sv = vm_stream_new(e.link, e.group);
    vm_stream *st = sv.as.st;
    sgl_error err = {{0}};
    vm_stream_append_text(st, "Q: hi\nA:", 8, &err);
    vm_stream_append_gen(st, gen_args("a", "\n"), &err);
    vm_stream_append_text(st, " end", 4, &err);
    CHECK(vm_stream_var_pending(st, "a"));
    CHECK_INT(e.group->n_busy, 1);
    vm_value name = vm_str_from("a"), out = vm_none();
    int fiber = 0;
    CHECK_INT(vm_stream_want_var(st, name, &fiber, &out, &err), VM_WAIT);
    CHECK_INT(vm_link_flush(e.link), 1);
    CHECK_INT(vm_link_wait(e.link, 0), 1);
    CHECK(n_woken >= 1 && last_woken == &fiber);
    CHECK_INT(vm_stream_want_var(st, name, &fiber, &out, &err), VM_READY);
    CHECK_STR(vm_str_cstr(out), " hello");
    vm_release(out);
    CHECK_INT(vm_stream_want_idle(st, &fiber, &out, &err), VM_READY);
    CHECK_STR(vm_str_cstr(out), "Q: hi\nA: hello end");
    vm_release(out);
    CHECK_INT(vm_stream_want_meta(st, name, &fiber, &out, &err), VM_READY);
    CHECK_STR(vm_str_cstr(*vm_map_get_cstr(out, "finish_reason")), "stop");
    CHECK_STR(vm_str_cstr(*vm_map_get_cstr(out, "matched_stop")), "\n");
    CHECK_INT(vm_map_get_cstr(out, "prompt_tokens")->as.i, 8);
    CHECK_INT(vm_map_get_cstr(out, "completion_tokens")->as.i, 6);
    vm_release(out);
    CHECK_INT(e.group->n_busy, 0);
    CHECK_INT(e.group->completion_tokens, 6);
    vm_value missing = vm_str_from("zz");
    CHECK_INT(vm_stream_want_var(st, missing, &fiber, &out, &err), VM_FAILED);
    CHECK_STR(err.msg, "stream has no variable 'zz' (it has: a)");
    vm_release(missing);
    vm_release(name);
    vm_release(sv);
    env_free(&e);
    CHECK_INT(vm_live_objects(), live);
}

static void test_roles(void) {
    int64_t live = vm_live_objects();
    env e;
    env_init(&e);
    vm_fake_add_rule(e.fake, "assistant\n", "Paris.", NULL);
    vm_value sv = vm_stream_new(e.link, e.group);
    vm_stream *st = sv.as.st;
    sgl_error err = {{0}};
    vm_stream_role_begin(st, VM_ROLE_USER, &err);
    vm_stream_append_text(st, "Capital?", 8, &err);
    vm_stream_role_end(st, VM_ROLE_USER, &err);
    vm_stream_role_begin(st, VM_ROLE_ASSISTANT, &err);
    vm_stream_append_gen(st, gen_args("ans", NULL), &err);
    vm_stream_role_end(st, VM_ROLE_ASSISTANT, &err);
    drain(&e);
    vm_value out;
    CHECK_INT(vm_stream_want_idle(st, NULL, &out, &err), VM_READY);
    CHECK_STR(vm_str_cstr(out), "<|im_start|>user\nCapital?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n");
    vm_release(out);
    CHECK_STR(e.fake->log[0], "G:<|im_start|>user\nCapital?<|im_end|>\n<|im_start|>assistant\n");
    CHECK_INT(vm_list_len(st->messages), 2);
    vm_value m1 = vm_list_get(st->messages, 1);
    CHECK_STR(vm_str_cstr(*vm_map_get_cstr(m1, "role")), "assistant");
    CHECK_STR(vm_str_cstr(*vm_map_get_cstr(m1, "content")), "Paris.");
    vm_release(sv);
    env_free(&e);
    CHECK_INT(vm_live_objects(), live);
}

static void test_fork_join(void) {
    int64_t live = vm_live_objects();
    env e;
    env_init(&e);
    e.fake->reverse = true; /* results arrive out of order */
    vm_fake_add_rule(e.fake, "Tip 1:", " eat well", NULL);
    vm_fake_add_rule(e.fake, "Tip 2:", " sleep", NULL);
    vm_value sv = vm_stream_new(e.link, e.group);
    vm_stream *st = sv.as.st;
    sgl_error err = {{0}};
    const char *prefix = "Two tips for health.\n";
    vm_stream_append_text(st, prefix, strlen(prefix), &err);
    vm_value b;
    CHECK_INT(vm_stream_fork(st, 2, &b, &err), 0);
    CHECK_INT(vm_list_len(b), 2);
    for (int i = 0; i < 2; i++) {
        vm_stream *c = vm_list_get(b, (uint32_t)i).as.st;
        char t[16];
        snprintf(t, sizeof t, "Tip %d:", i + 1);
        vm_stream_append_text(c, t, strlen(t), &err);
        vm_stream_append_gen(c, gen_args("detail", NULL), &err);
    }
    /* First flush: only the prefill (branches wait for it). */
    CHECK_INT(vm_link_flush(e.link), 1);
    CHECK_INT(vm_link_wait(e.link, 0), 1);
    CHECK_INT(vm_link_flush(e.link), 2);
    CHECK_INT(vm_link_wait(e.link, 0), 2);
    CHECK_INT(e.fake->n_batches, 2);
    CHECK_INT(e.fake->batches[1], 2);
    CHECK(e.fake->log[0][0] == 'P');
    vm_value name = vm_str_from("detail"), out;
    vm_stream *c0 = vm_list_get(b, 0).as.st;
    CHECK_INT(vm_stream_want_meta(c0, name, NULL, &out, &err), VM_READY);
    CHECK_INT(vm_map_get_cstr(out, "cached_tokens")->as.i, (int64_t)strlen(prefix));
    vm_release(out);
    CHECK_INT(vm_stream_join(b, true, &err), 0);
    CHECK_INT(vm_stream_want_var(st, name, NULL, &out, &err), VM_READY);
    sgl_strbuf sb = {0};
    vm_str_append(&sb, out);
    CHECK_STR(sb.data, "[\" eat well\", \" sleep\"]");
    sgl_strbuf_free(&sb);
    vm_release(out);
    CHECK_INT(vm_stream_want_idle(st, NULL, &out, &err), VM_READY);
    CHECK_STR(vm_str_cstr(out), "Two tips for health.\nTip 1: eat wellTip 2: sleep");
    vm_release(out);
    /* join of a non-fork list */
    vm_value bad = vm_list_new(0);
    vm_list_push(bad, vm_retain(sv));
    CHECK_INT(vm_stream_join(bad, false, &err), -1);
    CHECK_STR(err.msg, "join: item 0 is not a stream made by fork");
    vm_release(bad);
    vm_release(name);
    vm_release(b);
    vm_release(sv);
    env_free(&e);
    CHECK_INT(vm_live_objects(), live);
}

/* cond: "ab" [-0.2, -5], "cd" [-0.5, -0.5]; uncond: "ab" [x, -5], "cd" [x, -0.1]. */
static void scorer(void *ctx, const char *prompt, const char *choice, float *lp, int32_t n) {
    int variant = *(int *)ctx;
    bool uncond = prompt[0] == 0;
    bool ab = choice[0] == 'a';
    float cond_ab[2][2] = {{-0.2f, -5.0f}, {-1.0f, -1.0f}};
    float cond_cd[2][2] = {{-0.5f, -0.5f}, {-0.9f, -0.9f}};
    float unc_ab[2][2] = {{-7.0f, -5.0f}, {-7.0f, -3.0f}};
    float unc_cd[2][2] = {{-7.0f, -0.1f}, {-7.0f, -0.1f}};
    for (int32_t i = 0; i < n && i < 2; i++)
        lp[i] = uncond ? (ab ? unc_ab : unc_cd)[variant][i] : (ab ? cond_ab : cond_cd)[variant][i];
}

static const char *select_with(int variant, vm_select_method method) {
    static char chosen[16];
    env e;
    env_init(&e);
    e.fake->scorer = scorer;
    e.fake->scorer_ctx = &variant;
    vm_value sv = vm_stream_new(e.link, e.group);
    sgl_error err = {{0}};
    vm_stream_append_text(sv.as.st, "Pick:", 5, &err);
    vm_gen_args *a = gen_args("pick", NULL);
    a->is_select = true;
    a->method = method;
    a->n_choices = 2;
    a->choices = calloc(2, sizeof(char *));
    a->choices[0] = sgl_strdup("ab");
    a->choices[1] = sgl_strdup("cd");
    vm_stream_append_gen(sv.as.st, a, &err);
    drain(&e);
    vm_value name = vm_str_from("pick"), out;
    chosen[0] = 0;
    if (vm_stream_want_var(sv.as.st, name, NULL, &out, &err) == VM_READY) {
        snprintf(chosen, sizeof chosen, "%s", vm_str_cstr(out));
        vm_release(out);
    }
    if (method == VM_SELECT_UNCONDITIONAL_LIKELIHOOD) CHECK_INT(e.fake->n_log, 2);
    vm_release(name);
    vm_release(sv);
    env_free(&e);
    return chosen;
}

static void test_select_methods(void) {
    int64_t live = vm_live_objects();
    CHECK_STR(select_with(0, VM_SELECT_TOKEN_LENGTH_NORMALIZED), "cd");
    CHECK_STR(select_with(0, VM_SELECT_GREEDY_TOKEN), "ab");
    CHECK_STR(select_with(0, VM_SELECT_UNCONDITIONAL_LIKELIHOOD), "ab");
    CHECK_STR(select_with(1, VM_SELECT_TOKEN_LENGTH_NORMALIZED), "cd");
    CHECK_STR(select_with(1, VM_SELECT_GREEDY_TOKEN), "cd");
    CHECK_STR(select_with(1, VM_SELECT_UNCONDITIONAL_LIKELIHOOD), "ab");
    CHECK_INT(vm_live_objects(), live);
}

/* A refused PREFILL must not strand the branches waiting for it. */
static void test_refused_prefill(void) {
    int64_t live = vm_live_objects();
    env e;
    env_init(&e);
    e.fake->refuse_prefill = true;
    vm_value sv = vm_stream_new(e.link, e.group);
    sgl_error err = {{0}};
    vm_stream_append_text(sv.as.st, "prefix ", 7, &err);
    vm_value b;
    CHECK_INT(vm_stream_fork(sv.as.st, 2, &b, &err), 0);
    for (uint32_t i = 0; i < 2; i++) vm_stream_append_gen(vm_list_get(b, i).as.st, gen_args("g", NULL), &err);
    drain(&e);
    vm_value name = vm_str_from("g"), out;
    for (uint32_t i = 0; i < 2; i++) {
        CHECK_INT(vm_stream_want_var(vm_list_get(b, i).as.st, name, NULL, &out, &err), VM_READY);
        vm_release(out);
    }
    CHECK_INT(vm_link_outstanding(e.link), 0);
    vm_release(name);
    vm_release(b);
    vm_release(sv);
    env_free(&e);
    CHECK_INT(vm_live_objects(), live);
}

static void test_failure(void) {
    int64_t live = vm_live_objects();
    env e;
    env_init(&e);
    vm_fake_add_rule(e.fake, "bad", NULL, "boom");
    vm_value sv = vm_stream_new(e.link, e.group);
    sgl_error err = {{0}};
    vm_stream_append_text(sv.as.st, "bad prompt", 10, &err);
    vm_stream_append_gen(sv.as.st, gen_args("x", NULL), &err);
    vm_stream_append_text(sv.as.st, "after", 5, &err);
    drain(&e);
    vm_value name = vm_str_from("x"), out;
    CHECK_INT(vm_stream_want_var(sv.as.st, name, NULL, &out, &err), VM_FAILED);
    CHECK_STR(err.msg, "gen 'x': engine error: boom");
    CHECK_STR(e.group->error, "gen 'x': engine error: boom");
    CHECK_INT(e.group->n_busy, 0);
    vm_release(name);
    vm_release(sv);
    env_free(&e);
    CHECK_INT(vm_live_objects(), live);
}

int main(void) {
    TEST_RUN(test_gen_order_and_wait);
    TEST_RUN(test_roles);
    TEST_RUN(test_fork_join);
    TEST_RUN(test_select_methods);
    TEST_RUN(test_refused_prefill);
    TEST_RUN(test_failure);
    return TEST_DONE();
}
