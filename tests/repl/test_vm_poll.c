/* test_vm_poll: vm_config.poll on the fake engine: it is called while a run
 * goes on (first at once), vm_progress_get counts run_batch instances
 * (asked, started, done, failed), and a non-zero return interrupts the run
 * (requests dropped or cancelled, every live instance failed with a located
 * "interrupted", no run_batch instance started afterwards) leaving the VM
 * usable for the next vm_spawn / vm_run; an interrupt while fork branches
 * wait for their shared prefix drops their requests too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/compiler.h"
#include "lang/lang.h"
#include "tests/test.h"
#include "vm/fake_engine.h"
#include "vm/vm.h"

typedef struct poller {
    int calls;
    int stop_at; /* return 1 from this call on (0: never) */
} poller;

static int poll_fn(void *ctx) {
    poller *p = ctx;
    p->calls++;
    return p->stop_at && p->calls >= p->stop_at;
}

static sgl_module *compile_src(const char *src) {
    sgl_program *p = NULL;
    if (sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), NULL) != 0) {
        sgl_diags_print(p, stderr, false);
        sgl_program_free(p);
        return NULL;
    }
    sgl_error err = {{0}};
    sgl_module *m = compiler_compile(p, NULL, &err);
    sgl_program_free(p);
    if (!m) fprintf(stderr, "compile: %s\n", err.msg);
    return m;
}

/* A VM on a new fake engine (*e) that prints to out and polls pl. */
static vm *new_vm(sgl_engine **e, FILE *out, poller *pl, sgl_error *err) {
    vm_fake *fake = NULL;
    *e = vm_fake_engine_new(&fake);
    vm_config cfg = vm_config_default();
    cfg.engine = *e;
    cfg.out = out;
    cfg.poll = poll_fn;
    cfg.poll_ctx = pl;
    return vm_new(&cfg, err);
}

static const char *BATCH_SRC =
    "fn item(s, i) {\n"
    "  assert i != 3, \"bad item\"\n"
    "  s += \"Q\" + str(i) + gen(\"a\", max_tokens=4)\n"
    "}\n"
    "fn again(s) {\n"
    "  s += \"again\" + gen(\"b\", max_tokens=2)\n"
    "  print(s[\"b\"])\n"
    "}\n"
    "main {\n"
    "  let args = []\n"
    "  for i in range(10) { args = args + [{\"i\": i}] }\n"
    "  let rs = run_batch(item, args, parallel=2)\n"
    "  print(len(rs))\n"
    "}\n";

static void test_progress_counts(void) {
    sgl_module *m = compile_src(BATCH_SRC);
    CHECK(m != NULL);
    if (!m) return;
    sgl_engine *e = NULL;
    poller pl = {0, 0};
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    sgl_error err = {{0}};
    vm *v = new_vm(&e, mem, &pl, &err);
    vm_inst *in = vm_spawn(v, m, (uint32_t)m->entry, NULL, 0, false, &err);
    CHECK(in != NULL);
    vm_run(v, &err);
    fclose(mem);
    CHECK(!vm_inst_failed(in));
    CHECK_STR(buf, "10\n");
    CHECK(pl.calls >= 1); /* due at once */
    vm_progress vp;
    vm_progress_get(v, &vp);
    CHECK_INT(vp.batch_total, 10);
    CHECK_INT(vp.batch_started, 10);
    CHECK_INT(vp.batch_done, 10);
    CHECK_INT(vp.batch_failed, 1);
    vm_free(v);
    free(buf);
    sgl_engine_free(e);
    compiler_module_free(m);
}

static void test_interrupt_batch(void) {
    sgl_module *m = compile_src(BATCH_SRC);
    CHECK(m != NULL);
    if (!m) return;
    sgl_engine *e = NULL;
    poller pl = {0, 1}; /* stop at the first call: after main parked on run_batch */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    sgl_error err = {{0}};
    vm *v = new_vm(&e, mem, &pl, &err);
    vm_inst *in = vm_spawn(v, m, (uint32_t)m->entry, NULL, 0, false, &err);
    vm_run(v, &err);
    CHECK(vm_inst_done(in));
    CHECK(vm_inst_failed(in));
    const char *msg = vm_inst_error(in);
    CHECK_MSG(msg && strstr(msg, "t.sgl:12:") && strstr(msg, "error: interrupted"), "error: %s", msg ? msg : "(none)");
    vm_progress vp;
    vm_progress_get(v, &vp);
    CHECK_INT(vp.batch_total, 10);
    CHECK_INT(vp.batch_started, 2); /* parallel=2, none started after the interrupt */
    CHECK_INT(vp.batch_done, 2);
    CHECK_INT(vp.batch_failed, 2);

    /* The VM goes on: a new instance runs to the end. */
    pl.stop_at = 0;
    int fi = sgl_module_find_fn(m, "again");
    vm_inst *in2 = vm_spawn(v, m, (uint32_t)fi, NULL, 0, true, &err);
    CHECK(in2 != NULL);
    vm_run(v, &err);
    fclose(mem);
    CHECK(in2 && !vm_inst_failed(in2));
    CHECK_STR(buf, "ok\n");
    vm_free(v);
    free(buf);
    sgl_engine_free(e);
    compiler_module_free(m);
}

static void test_interrupt_loop(void) {
    /* A loop that never parks is interrupted at a time slice. */
    sgl_module *m = compile_src("main {\n  let i = 0\n  while true {\n    i += 1\n  }\n}\n");
    CHECK(m != NULL);
    if (!m) return;
    vm_fake *fake = NULL;
    sgl_engine *e = vm_fake_engine_new(&fake);
    poller pl = {0, 3};
    vm_config cfg = vm_config_default();
    cfg.engine = e;
    cfg.poll = poll_fn;
    cfg.poll_ctx = &pl;
    cfg.poll_interval = 0.001;
    sgl_error err = {{0}};
    vm *v = vm_new(&cfg, &err);
    vm_inst *in = vm_spawn(v, m, (uint32_t)m->entry, NULL, 0, false, &err);
    vm_run(v, &err);
    CHECK(vm_inst_failed(in));
    const char *msg = vm_inst_error(in);
    CHECK_MSG(msg && strstr(msg, "error: interrupted"), "error: %s", msg ? msg : "(none)");
    CHECK_INT(pl.calls, 3);
    vm_free(v);
    sgl_engine_free(e);
    compiler_module_free(m);
}

static void test_interrupt_fork(void) {
    /* Interrupted while a fork's shared prefix is still queued and every
     * branch waits for it: the branches' requests (queued when the prefix
     * counts as done) are dropped too, and nothing stays alive. */
    sgl_module *m = compile_src("fn f(s) {\n  s += \"Q:\"\n  let b = fork(s, 16)\n"
                                "  b += gen(\"x\", max_tokens=2)\n  join(b)\n}\nmain { f() }\n");
    CHECK(m != NULL);
    if (!m) return;
    int64_t live = vm_live_objects();
    sgl_engine *e = NULL;
    poller pl = {0, 1};
    sgl_error err = {{0}};
    vm *v = new_vm(&e, stdout, &pl, &err);
    vm_inst *in = vm_spawn(v, m, (uint32_t)m->entry, NULL, 0, false, &err);
    vm_run(v, &err);
    CHECK(vm_inst_failed(in));
    const char *msg = vm_inst_error(in);
    CHECK_MSG(msg && strstr(msg, "error: interrupted"), "error: %s", msg ? msg : "(none)");
    vm_free(v);
    CHECK_INT(vm_live_objects(), live);
    sgl_engine_free(e);
    compiler_module_free(m);
}

int main(void) {
    TEST_RUN(test_progress_counts);
    TEST_RUN(test_interrupt_batch);
    TEST_RUN(test_interrupt_loop);
    TEST_RUN(test_interrupt_fork);
    return TEST_DONE();
}
