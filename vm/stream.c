/* stream.c: prompt streams: the op queue (text, roles, gen/select), result
 * application (variables, meta, select scoring as SGLang defines it),
 * waiters, fork/join and the per-instance group. See stream.h.
 */
#include "vm/stream.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vm/link.h"

const char *vm_role_name(vm_role r) {
    switch (r) {
    case VM_ROLE_SYSTEM: return "system";
    case VM_ROLE_USER: return "user";
    default: return "assistant";
    }
}

/* ---- gen args --------------------------------------------------------------- */

/* splitmix64's finaliser over a running combination of the inputs. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t vm_seed_mix(uint64_t a, uint64_t b, uint64_t c) {
    return mix64(mix64(mix64(a) ^ b) ^ c);
}

const char *vm_dtype_regex(vm_dtype dt) {
    switch (dt) {
    case VM_DTYPE_INT: return "-?(0|[1-9][0-9]{0,17})";
    case VM_DTYPE_FLOAT: return "-?(0|[1-9][0-9]{0,15})(\\.[0-9]{1,16})?([eE][-+]?[0-9]{1,2})?";
    case VM_DTYPE_BOOL: return "true|false";
    default: return NULL;
    }
}

vm_gen_args *vm_gen_args_new(void) {
    vm_gen_args *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->sp = sgl_sampling_params_default();
    return a;
}

void vm_gen_args_free(vm_gen_args *a) {
    if (!a) return;
    free(a->name);
    free(a->where);
    for (int32_t i = 0; i < a->n_stop; i++) free(a->stop[i]);
    free(a->stop);
    free(a->stop_ids);
    free(a->regex);
    free(a->json_schema);
    free(a->grammar);
    for (int32_t i = 0; i < a->n_choices; i++) free(a->choices[i]);
    free(a->choices);
    free(a);
}

/* ---- groups ------------------------------------------------------------------ */

vm_group *vm_group_new(void) {
    vm_group *g = calloc(1, sizeof *g);
    if (g) {
        g->rc = 1;
        g->vars = vm_none();
    }
    return g;
}

/* Records a produced variable on the group (borrowed key/value). */
static void group_note_var(vm_group *g, vm_value key, vm_value val) {
    if (!g) return;
    if (g->vars.type != VM_MAP) g->vars = vm_map_new();
    if (g->vars.type == VM_MAP) vm_map_set(g->vars, vm_retain(key), vm_retain(val), NULL);
}

void vm_group_release(vm_group *g) {
    if (!g || --g->rc > 0) return;
    free(g->error);
    free(g->error_where);
    vm_release(g->vars);
    free(g->waiters);
    free(g);
}

static int waiter_add(void ***arr, uint32_t *n, uint32_t *cap, void *fiber) {
    for (uint32_t i = 0; i < *n; i++)
        if ((*arr)[i] == fiber) return 0;
    if (*n == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 4;
        void **na = realloc(*arr, nc * sizeof(void *));
        if (!na) return -1;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = fiber;
    return 0;
}

int vm_group_wait(vm_group *g, void *fiber) {
    return waiter_add(&g->waiters, &g->n_waiters, &g->cap_waiters, fiber);
}

/* ---- streams --------------------------------------------------------------------- */

vm_value vm_stream_new(vm_link *link, vm_group *group) {
    vm_stream *st = vm_obj_alloc(sizeof(vm_stream), VM_STREAM);
    if (!st) return vm_none();
    vm_value v = {.type = VM_STREAM, .as.st = st};
    st->link = link;
    st->group = group;
    if (group) {
        group->rc++;
        st->seed_key = vm_seed_mix(group->seed_key, 0x5354 /* "ST" */, group->n_streams++);
    }
    st->open_role = -1;
    st->vars = vm_map_new();
    st->meta = vm_map_new();
    st->messages = vm_list_new(0);
    if (st->vars.type != VM_MAP || st->meta.type != VM_MAP || st->messages.type != VM_LIST) {
        vm_release(v);
        return vm_none();
    }
    return v;
}

static void sop_free(vm_sop *op) {
    free(op->text);
    sgl_strbuf_free(&op->partial);
    vm_gen_args_free(op->gen);
    sgl_result_free(op->res[0]);
    sgl_result_free(op->res[1]);
    free(op);
}

void vm_stream_destroy(vm_stream *st) {
    for (vm_sop *op = st->head, *next; op; op = next) {
        next = op->next;
        sop_free(op);
    }
    if (st->busy_counted && st->group) st->group->n_busy--;
    vm_release(st->vars);
    vm_release(st->meta);
    vm_release(st->messages);
    vm_release(st->ret_value);
    vm_release(st->images);
    vm_release(st->scopes);
    sgl_strbuf_free(&st->text);
    if (st->prefill) vm_prefill_release(st->prefill);
    vm_group_release(st->group);
    if (st->parent) vm_release((vm_value){.type = VM_STREAM, .as.st = st->parent});
    free(st->waiters);
    free(st->error);
    free(st);
}

static void wake_all(vm_stream *st) {
    uint32_t n = st->n_waiters;
    st->n_waiters = 0;
    for (uint32_t i = 0; i < n; i++) vm_link_wake(st->link, st->waiters[i]);
}

static void set_busy(vm_stream *st, bool busy) {
    if (busy == st->busy_counted) return;
    st->busy_counted = busy;
    vm_group *g = st->group;
    if (!g) return;
    if (busy) {
        g->n_busy++;
        return;
    }
    if (--g->n_busy == 0) {
        uint32_t n = g->n_waiters;
        g->n_waiters = 0;
        for (uint32_t i = 0; i < n; i++) vm_link_wake(st->link, g->waiters[i]);
    }
}

void vm_stream_fail(vm_stream *st, const char *msg) { vm_stream_fail_at(st, NULL, msg); }

void vm_stream_fail_at(vm_stream *st, const char *where, const char *msg) {
    if (!st->error) {
        sgl_strbuf sb = {0};
        /* a failure in a fork branch names the branch (0-based, as b[i]) */
        if (st->fork_branch) sgl_strbuf_printf(&sb, "fork branch %u of %u: ", st->fork_branch - 1, st->fork_width);
        sgl_strbuf_puts(&sb, msg);
        if (where) sgl_strbuf_printf(&sb, " (at %s)", where);
        st->error = sgl_strbuf_take(&sb);
    }
    if (st->group && !st->group->error) {
        st->group->error = sgl_strdup(msg);
        st->group->error_where = where ? sgl_strdup(where) : NULL;
    }
    for (vm_sop *op = st->head, *next; op; op = next) {
        next = op->next;
        sop_free(op);
    }
    st->head = st->tail = NULL;
    st->in_flight = false;
    set_busy(st, false);
    wake_all(st);
}

static void enqueue(vm_stream *st, vm_sop *op) {
    op->next = NULL;
    if (st->tail) st->tail->next = op;
    else st->head = op;
    st->tail = op;
    set_busy(st, true);
}

static void pop_head(vm_stream *st) {
    vm_sop *op = st->head;
    st->head = op->next;
    if (!st->head) st->tail = NULL;
    st->in_flight = false;
    sop_free(op);
}

static const chat_template *tmpl(vm_stream *st) { return vm_link_template(st->link); }

static int push_message(vm_stream *st, const char *role, const char *content, size_t len) {
    vm_value m = vm_map_new();
    if (m.type != VM_MAP) return -1;
    if (vm_map_set_cstr(m, "role", vm_str_from(role), NULL) < 0 ||
        vm_map_set_cstr(m, "content", vm_str_new(content, len), NULL) < 0) {
        vm_release(m);
        return -1;
    }
    return vm_list_push(st->messages, m);
}

static void apply_role_begin(vm_stream *st, vm_role role) {
    const chat_template *ct = tmpl(st);
    if (!st->began) {
        st->began = true;
        if (ct && st->text.len == 0) sgl_strbuf_puts(&st->text, chat_template_begin(ct));
        const char *def = ct ? chat_template_default_system(ct) : NULL;
        if (def && role != VM_ROLE_SYSTEM && vm_list_len(st->messages) == 0) {
            /* What the model's own template renders when no system turn leads. */
            sgl_strbuf_puts(&st->text, chat_role_prefix(ct, "system"));
            sgl_strbuf_puts(&st->text, def);
            sgl_strbuf_puts(&st->text, chat_role_suffix(ct, "system"));
            push_message(st, "system", def, strlen(def));
        }
    }
    if (ct) sgl_strbuf_puts(&st->text, chat_role_prefix(ct, vm_role_name(role)));
    st->open_role = (int)role;
    st->role_start = st->text.len;
}

static void apply_role_end(vm_stream *st, vm_role role) {
    const chat_template *ct = tmpl(st);
    size_t start = st->open_role == (int)role ? st->role_start : st->text.len;
    push_message(st, vm_role_name(role), st->text.data ? st->text.data + start : "",
                 st->text.len - start);
    if (ct) sgl_strbuf_puts(&st->text, chat_role_suffix(ct, vm_role_name(role)));
    st->open_role = -1;
}

/* Applies ops from the head until one needs the engine. */
static void apply_image(vm_stream *st, const char *path) {
    if (st->images.type != VM_LIST) st->images = vm_list_new(1);
    vm_value m = vm_map_new();
    vm_map_set_cstr(m, "path", vm_str_from(path), NULL);
    vm_map_set_cstr(m, "offset", vm_int((int64_t)st->text.len), NULL);
    if (st->images.type == VM_LIST) vm_list_push(st->images, m);
    else vm_release(m);
}

int vm_stream_append_image(vm_stream *st, const char *path, sgl_error *err) {
    if (st->error) return 0;
    if (!st->head) {
        apply_image(st, path);
        return 0;
    }
    vm_sop *op = calloc(1, sizeof *op);
    if (!op || !(op->text = sgl_strdup(path))) {
        free(op);
        return sgl_error_set(err, "out of memory");
    }
    op->kind = VM_SOP_IMAGE;
    enqueue(st, op);
    return 0;
}

static void finish_var(vm_stream *st, const char *name, vm_value val, vm_value meta);

static void apply_var_scope(vm_stream *st, const char *name, bool end) {
    if (!end) {
        if (st->scopes.type != VM_MAP) st->scopes = vm_map_new();
        if (st->scopes.type == VM_MAP) vm_map_set_cstr(st->scopes, name, vm_int((int64_t)st->text.len), NULL);
        return;
    }
    vm_value *at = st->scopes.type == VM_MAP ? vm_map_get_cstr(st->scopes, name) : NULL;
    size_t from = at && at->type == VM_INT && (size_t)at->as.i <= st->text.len ? (size_t)at->as.i : st->text.len;
    finish_var(st, name, vm_str_new(st->text.data ? st->text.data + from : "", st->text.len - from), vm_map_new());
}

int vm_stream_var_scope(vm_stream *st, const char *name, bool end, sgl_error *err) {
    if (st->error) return 0;
    if (!st->head) {
        apply_var_scope(st, name, end);
        wake_all(st);
        return 0;
    }
    vm_sop *op = calloc(1, sizeof *op);
    if (!op || !(op->text = sgl_strdup(name))) {
        free(op);
        return sgl_error_set(err, "out of memory");
    }
    op->kind = end ? VM_SOP_VAR_END : VM_SOP_VAR_BEGIN;
    enqueue(st, op);
    return 0;
}

void vm_stream_advance(vm_stream *st) {
    bool progressed = false;
    while (st->head && !st->error) {
        vm_sop *op = st->head;
        if (op->kind == VM_SOP_GEN) {
            if (st->in_flight) return;
            if (st->prefill && !st->prefill->done) {
                vm_prefill *pf = st->prefill;
                bool listed = false;
                for (uint32_t i = 0; i < pf->n_waiting; i++) listed |= pf->waiting[i] == st;
                if (!listed) {
                    if (pf->n_waiting == pf->cap_waiting) {
                        uint32_t nc = pf->cap_waiting ? pf->cap_waiting * 2 : 4;
                        vm_stream **nw = realloc(pf->waiting, nc * sizeof *nw);
                        if (!nw) {
                            vm_stream_fail(st, "out of memory");
                            return;
                        }
                        pf->waiting = nw;
                        pf->cap_waiting = nc;
                    }
                    st->hdr.rc++;
                    pf->waiting[pf->n_waiting++] = st;
                }
                if (progressed) wake_all(st);
                return;
            }
            if (st->prefill) {
                vm_prefill_release(st->prefill);
                st->prefill = NULL;
            }
            st->in_flight = true;
            if (vm_link_queue_gen(st->link, st) < 0) {
                vm_stream_fail(st, "out of memory queueing a request");
                return;
            }
            if (progressed) wake_all(st);
            return;
        }
        if (op->kind == VM_SOP_TEXT) {
            sgl_strbuf_append(&st->text, op->text, op->len);
            if (st->open_role < 0 && op->len) st->loose_text = true;
        } else if (op->kind == VM_SOP_IMAGE) apply_image(st, op->text);
        else if (op->kind == VM_SOP_VAR_BEGIN || op->kind == VM_SOP_VAR_END)
            apply_var_scope(st, op->text, op->kind == VM_SOP_VAR_END);
        else if (op->kind == VM_SOP_ROLE_BEGIN) apply_role_begin(st, op->role);
        else apply_role_end(st, op->role);
        pop_head(st);
        progressed = true;
    }
    if (!st->head) set_busy(st, false);
    wake_all(st);
}

int vm_stream_append_text(vm_stream *st, const char *text, size_t len, sgl_error *err) {
    if (st->error) return 0;
    if (!st->head) {
        if (sgl_strbuf_append(&st->text, text, len) < 0) return sgl_error_set(err, "out of memory");
        if (st->open_role < 0 && len) st->loose_text = true;
        return 0;
    }
    vm_sop *op = calloc(1, sizeof *op);
    if (!op || !(op->text = sgl_strndup(text, len))) {
        free(op);
        return sgl_error_set(err, "out of memory");
    }
    op->kind = VM_SOP_TEXT;
    op->len = len;
    enqueue(st, op);
    return 0;
}

static int append_role(vm_stream *st, vm_sop_kind kind, vm_role role, sgl_error *err) {
    if (st->error) return 0;
    if (!st->head) {
        if (kind == VM_SOP_ROLE_BEGIN) apply_role_begin(st, role);
        else apply_role_end(st, role);
        return 0;
    }
    vm_sop *op = calloc(1, sizeof *op);
    if (!op) return sgl_error_set(err, "out of memory");
    op->kind = kind;
    op->role = role;
    enqueue(st, op);
    return 0;
}

int vm_stream_role_begin(vm_stream *st, vm_role role, sgl_error *err) {
    return append_role(st, VM_SOP_ROLE_BEGIN, role, err);
}

int vm_stream_role_end(vm_stream *st, vm_role role, sgl_error *err) {
    return append_role(st, VM_SOP_ROLE_END, role, err);
}

int vm_stream_append_gen(vm_stream *st, vm_gen_args *args, sgl_error *err) {
    if (st->error) {
        vm_gen_args_free(args);
        return 0;
    }
    vm_sop *op = calloc(1, sizeof *op);
    if (!op) {
        vm_gen_args_free(args);
        return sgl_error_set(err, "out of memory");
    }
    op->kind = VM_SOP_GEN;
    op->gen = args;
    /* Numbered at queue time, in program order (see "Seeds" in stream.h). */
    uint32_t nth = st->n_gens++;
    if (!args->seed_fixed) {
        uint64_t base = args->seed_base_set ? args->seed_base : vm_link_run_seed(st->link);
        args->sp.seed = vm_seed_mix(base, st->seed_key, nth);
    }
    bool was_idle = st->head == NULL;
    enqueue(st, op);
    if (was_idle) vm_stream_advance(st);
    return 0;
}

bool vm_stream_var_pending(const vm_stream *st, const char *name) {
    for (const vm_sop *op = st->head; op; op = op->next)
        if ((op->kind == VM_SOP_GEN && op->gen->name && strcmp(op->gen->name, name) == 0) ||
            (op->kind == VM_SOP_VAR_END && strcmp(op->text, name) == 0))
            return true;
    return false;
}

static vm_wait_status failed(vm_stream *st, sgl_error *err) {
    sgl_error_set(err, "%s", st->error);
    return VM_FAILED;
}

static vm_wait_status park(vm_stream *st, void *fiber, sgl_error *err) {
    if (waiter_add(&st->waiters, &st->n_waiters, &st->cap_waiters, fiber) < 0) {
        sgl_error_set(err, "out of memory");
        return VM_FAILED;
    }
    return VM_WAIT;
}

static vm_wait_status want_in(vm_stream *st, vm_value map, const char *what, vm_value name,
                              void *fiber, vm_value *out, sgl_error *err) {
    if (name.type != VM_STR) {
        sgl_error_set(err, "stream %s name must be a str, not %s", what, vm_type_name(name.type));
        return VM_FAILED;
    }
    if (st->error) return failed(st, err);
    if (vm_stream_var_pending(st, vm_str_cstr(name))) return park(st, fiber, err);
    vm_value *v = vm_map_get(map, name);
    if (!v) {
        sgl_strbuf sb = {0};
        for (uint32_t i = 0; i < vm_map_len(st->vars); i++) {
            sgl_strbuf_puts(&sb, i ? ", " : "");
            vm_str_append(&sb, st->vars.as.m->entries[i].key);
        }
        sgl_strbuf q = {0};
        vm_escape(&q, vm_str_cstr(name), vm_str_len(name), 60, false);
        sgl_error_set(err, "stream has no %s '%s' (it has: %.300s)", what, q.data ? q.data : "",
                      sb.len ? sb.data : "none");
        sgl_strbuf_free(&q);
        sgl_strbuf_free(&sb);
        return VM_FAILED;
    }
    *out = vm_retain(*v);
    return VM_READY;
}

vm_wait_status vm_stream_want_var(vm_stream *st, vm_value name, void *fiber, vm_value *out,
                                  sgl_error *err) {
    return want_in(st, st->vars, "variable", name, fiber, out, err);
}

vm_wait_status vm_stream_want_meta(vm_stream *st, vm_value name, void *fiber, vm_value *out,
                                   sgl_error *err) {
    return want_in(st, st->meta, "meta for variable", name, fiber, out, err);
}

void vm_stream_on_partial(vm_stream *st, const sgl_result *r) {
    vm_sop *op = st->head;
    if (!op || op->kind != VM_SOP_GEN || st->error) return;
    if (r->text_len) sgl_strbuf_append(&op->partial, r->text, r->text_len);
    wake_all(st);
}

vm_wait_status vm_stream_text_piece(vm_stream *st, const char *name, size_t *consumed, void *fiber,
                                    vm_value *out, sgl_error *err) {
    *out = vm_none();
    if (st->error) return failed(st, err);
    if (!name) { /* the whole text: what is final, then the head gen's pieces */
        const vm_sop *h = st->head;
        size_t have = st->text.len + (h && h->kind == VM_SOP_GEN ? h->partial.len : 0);
        if (have > *consumed) {
            sgl_strbuf sb = {0};
            if (*consumed < st->text.len) sgl_strbuf_append(&sb, st->text.data + *consumed, st->text.len - *consumed);
            size_t skip = *consumed > st->text.len ? *consumed - st->text.len : 0;
            if (h && h->kind == VM_SOP_GEN && h->partial.len > skip)
                sgl_strbuf_append(&sb, h->partial.data + skip, h->partial.len - skip);
            *out = vm_str_take(&sb);
            *consumed = have;
            return VM_READY;
        }
        if (!st->head) return VM_READY; /* drained: the end */
        return park(st, fiber, err);
    }
    const sgl_strbuf *src = NULL;
    bool pending = false;
    for (vm_sop *op = st->head; op; op = op->next) {
        if (op->kind != VM_SOP_GEN || !op->gen->name || strcmp(op->gen->name, name) != 0) continue;
        pending = true;
        if (op == st->head) src = &op->partial;
        break;
    }
    if (!pending) {
        vm_value *v = vm_map_get_cstr(st->vars, name);
        if (!v) {
            sgl_strbuf q = {0};
            vm_escape(&q, name, strlen(name), 60, false);
            sgl_error_set(err, "text_iter: the stream has no variable '%s' and none is being generated",
                          q.data ? q.data : "");
            sgl_strbuf_free(&q);
            return VM_FAILED;
        }
        sgl_strbuf whole = {0};
        vm_str_append(&whole, *v);
        if (*consumed < whole.len) *out = vm_str_new(whole.data + *consumed, whole.len - *consumed);
        *consumed = SGL_MAX(*consumed, whole.len);
        sgl_strbuf_free(&whole);
        return VM_READY;
    }
    if (src && src->len > *consumed) {
        *out = vm_str_new(src->data + *consumed, src->len - *consumed);
        *consumed = src->len;
        return VM_READY;
    }
    return park(st, fiber, err);
}

vm_wait_status vm_stream_want_idle(vm_stream *st, void *fiber, vm_value *out, sgl_error *err) {
    if (st->error) return failed(st, err);
    if (st->head) return park(st, fiber, err);
    if (out) {
        *out = vm_str_new(st->text.data ? st->text.data : "", st->text.len);
        if (out->type != VM_STR) {
            sgl_error_set(err, "out of memory");
            return VM_FAILED;
        }
    }
    return VM_READY;
}

vm_value vm_stream_vars(vm_stream *st) { return st->vars; }

int vm_stream_show(sgl_strbuf *sb, vm_stream *st) {
    int rc = sgl_strbuf_printf(sb, "<stream %zu chars", st->text.len);
    if (vm_map_len(st->vars)) {
        rc |= sgl_strbuf_puts(sb, ", vars ");
        vm_value keys = vm_list_new(vm_map_len(st->vars));
        if (keys.type == VM_LIST) {
            for (uint32_t i = 0; i < vm_map_len(st->vars); i++)
                vm_list_push(keys, vm_retain(st->vars.as.m->entries[i].key));
            rc |= vm_repr_append(sb, keys);
            vm_release(keys);
        }
    }
    if (st->head) rc |= sgl_strbuf_puts(sb, ", running");
    if (st->error) rc |= sgl_strbuf_puts(sb, ", failed");
    rc |= sgl_strbuf_putc(sb, '>');
    return rc ? -1 : 0;
}

int vm_stream_set_var(vm_stream *st, const char *name, vm_value val, sgl_error *err) {
    return vm_map_set_cstr(st->vars, name, val, err);
}

/* ---- results ------------------------------------------------------------------------ */

static double f2d(float x);

static vm_value logprob_pair(float lp, int32_t tok, const char *text) {
    vm_value p = vm_map_new();
    if (p.type != VM_MAP) return p;
    vm_map_set_cstr(p, "token", tok >= 0 ? vm_int(tok) : vm_none(), NULL);
    vm_map_set_cstr(p, "logprob", tok >= 0 ? vm_float(f2d(lp)) : vm_none(), NULL);
    if (text) vm_map_set_cstr(p, "text", vm_str_from(text), NULL);
    return p;
}

/* [{token, logprob, text, top: [{token, logprob, text}...]}...] (token and
 * logprob none for the alternatives-only entry of a 0-token request) */
static vm_value logprob_list(const sgl_token_logprob *lps, int32_t n) {
    vm_value l = vm_list_new((uint32_t)n);
    if (l.type != VM_LIST) return l;
    for (int32_t i = 0; i < n; i++) {
        vm_value e = logprob_pair(lps[i].logprob, lps[i].token, lps[i].text);
        vm_value alts = vm_list_new((uint32_t)lps[i].n_top);
        for (int32_t k = 0; alts.type == VM_LIST && k < lps[i].n_top; k++)
            vm_list_push(alts, logprob_pair(lps[i].top_logprobs[k], lps[i].top_ids[k],
                                            lps[i].top_texts ? lps[i].top_texts[k] : NULL));
        if (e.type == VM_MAP) vm_map_set_cstr(e, "top", alts, NULL);
        else vm_release(alts);
        vm_list_push(l, e);
    }
    return l;
}

/* The meta map of docs/language.md §8.6. */
static vm_value meta_base(const sgl_result *r, int32_t prompt, int32_t completion, int32_t cached) {
    vm_value m = vm_map_new();
    if (m.type != VM_MAP) return m;
    vm_map_set_cstr(m, "prompt_tokens", vm_int(prompt), NULL);
    vm_map_set_cstr(m, "completion_tokens", vm_int(completion), NULL);
    vm_map_set_cstr(m, "cached_tokens", vm_int(cached), NULL);
    vm_map_set_cstr(m, "finish_reason", vm_str_from(sgl_finish_name(r->finish)), NULL);
    vm_value matched = vm_none();
    if (r->stop_str) matched = vm_str_from(r->stop_str);
    else if (r->finish == SGL_FINISH_STOP && r->stop_token >= 0) matched = vm_int(r->stop_token);
    vm_map_set_cstr(m, "matched_stop", matched, NULL);
    return m;
}

static void account(vm_stream *st, int32_t prompt, int32_t completion, int32_t cached) {
    if (!st->group) return;
    st->group->prompt_tokens += prompt;
    st->group->completion_tokens += completion;
    st->group->cached_tokens += cached;
    st->group->requests++;
}

/* Converts generated text per dtype. Returns 0 or -1 with msg. */
static int convert_dtype(vm_dtype dt, const char *text, vm_value *out, char *msg, size_t cap) {
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\n' || p[n - 1] == '\t' || p[n - 1] == '\r')) n--;
    char buf[64];
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end = NULL;
    errno = 0;
    switch (dt) {
    case VM_DTYPE_INT: {
        long long v = strtoll(buf, &end, 10);
        if (end == buf || *end || errno) break;
        *out = vm_int(v);
        return 0;
    }
    case VM_DTYPE_FLOAT: {
        double v = strtod(buf, &end);
        if (end == buf || *end || errno) break;
        *out = vm_float(v);
        return 0;
    }
    case VM_DTYPE_BOOL:
        if (!strcmp(buf, "true") || !strcmp(buf, "True")) *out = vm_bool(true);
        else if (!strcmp(buf, "false") || !strcmp(buf, "False")) *out = vm_bool(false);
        else break;
        return 0;
    default:
        *out = vm_str_from(text);
        return 0;
    }
    const char *tn = dt == VM_DTYPE_INT ? "int" : dt == VM_DTYPE_FLOAT ? "float" : "bool";
    char q[VM_QUOTE_CAP];
    snprintf(msg, cap,
             "the model's output %s is not a valid %s (the engine did not apply the "
             "dtype=\"%s\" constraint, or the output was cut by max_tokens or a stop string)",
             vm_quote_buf(q, sizeof q, buf, strlen(buf), 40), tn, tn);
    return -1;
}

static void finish_var(vm_stream *st, const char *name, vm_value val, vm_value meta) {
    if (name) {
        vm_value key = vm_str_from(name);
        group_note_var(st->group, key, val);
        vm_release(key);
        vm_map_set_cstr(st->vars, name, val, NULL);
        vm_map_set_cstr(st->meta, name, meta, NULL);
    } else {
        vm_release(val);
        vm_release(meta);
    }
}

static void apply_gen(vm_stream *st, vm_sop *op, sgl_result *r) {
    vm_gen_args *a = op->gen;
    sgl_strbuf_append(&st->text, r->text, r->text_len);
    vm_value val;
    char msg[400];
    if (convert_dtype(a->dtype, r->text, &val, msg, sizeof msg) < 0) {
        char full[600];
        snprintf(full, sizeof full, "gen '%s': %s", a->name ? a->name : "", msg);
        vm_stream_fail_at(st, a->where, full);
        return;
    }
    vm_value meta = meta_base(r, r->prompt_tokens, r->completion_tokens, r->cached_tokens);
    if (meta.type == VM_MAP) vm_map_set_cstr(meta, "forced_tokens", vm_int(r->forced_tokens), NULL);
    if (meta.type == VM_MAP && a->sp.return_logprob)
        vm_map_set_cstr(meta, "logprobs", logprob_list(r->logprobs, r->n_logprobs), NULL);
    if (meta.type == VM_MAP && r->n_input_logprobs > 0)
        vm_map_set_cstr(meta, "input_logprobs", logprob_list(r->input_logprobs, r->n_input_logprobs), NULL);
    account(st, r->prompt_tokens, r->completion_tokens, r->cached_tokens);
    finish_var(st, a->name, val, meta);
}

/* A float32 logprob as the double its shortest decimal form reads as, so
 * -0.1f shows as -0.1. */
static double f2d(float x) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    return strtod(buf, NULL);
}

static vm_value float_list(const double *v, int32_t n) {
    vm_value l = vm_list_new((uint32_t)n);
    for (int32_t i = 0; l.type == VM_LIST && i < n; i++) vm_list_push(l, vm_float(v[i]));
    return l;
}

static vm_value choice_logprobs(const sgl_choice_score *c) {
    vm_value l = vm_list_new((uint32_t)c->n_tokens);
    for (int32_t i = 0; l.type == VM_LIST && i < c->n_tokens; i++)
        vm_list_push(l, logprob_pair(c->logprobs[i], c->tokens[i], NULL));
    return l;
}

/* Picks a choice from the SCORE results, following SGLang's three methods:
 *   token_length_normalized: highest mean logprob of the choice's tokens;
 *   greedy_token_selection: compare the first token's logprob, ties go to
 *     the next token (a shorter choice is padded with its own mean);
 *   unconditional_likelihood_normalized: highest mean of (conditional -
 *     unconditional) logprob per token, the first unconditional logprob
 *     (no context to predict it from) counting as 0.
 * First index wins ties. */
static void apply_select(vm_stream *st, vm_sop *op) {
    vm_gen_args *a = op->gen;
    sgl_result *r = op->res[0];
    int32_t n = a->n_choices;
    if (r->n_choices != n) {
        vm_stream_fail(st, "select: the engine scored a different number of choices");
        return;
    }
    double *norm = calloc((size_t)n, sizeof(double));
    double *uncond_norm = calloc((size_t)n, sizeof(double));
    if (!norm || !uncond_norm) {
        free(norm);
        free(uncond_norm);
        vm_stream_fail(st, "out of memory");
        return;
    }
    int32_t max_len = 0;
    for (int32_t i = 0; i < n; i++) {
        const sgl_choice_score *c = &r->choices[i];
        double sum = 0;
        for (int32_t k = 0; k < c->n_tokens; k++) sum += f2d(c->logprobs[k]);
        norm[i] = c->n_tokens ? sum / c->n_tokens : -INFINITY;
        if (c->n_tokens > max_len) max_len = c->n_tokens;
    }
    int32_t best = 0;
    if (a->method == VM_SELECT_TOKEN_LENGTH_NORMALIZED) {
        for (int32_t i = 1; i < n; i++)
            if (norm[i] > norm[best]) best = i;
    } else if (a->method == VM_SELECT_GREEDY_TOKEN) {
        /* remaining[] keeps the candidates still tied. */
        bool *alive = calloc((size_t)n, sizeof(bool));
        int32_t n_alive = n;
        for (int32_t i = 0; alive && i < n; i++) alive[i] = true;
        for (int32_t j = 0; alive && j < max_len && n_alive > 1; j++) {
            double mx = -INFINITY;
            for (int32_t i = 0; i < n; i++) {
                if (!alive[i]) continue;
                const sgl_choice_score *c = &r->choices[i];
                double lp = j < c->n_tokens ? c->logprobs[j] : norm[i];
                if (lp > mx) mx = lp;
            }
            for (int32_t i = 0; i < n; i++) {
                if (!alive[i]) continue;
                const sgl_choice_score *c = &r->choices[i];
                double lp = j < c->n_tokens ? c->logprobs[j] : norm[i];
                if (lp != mx) {
                    alive[i] = false;
                    n_alive--;
                }
            }
        }
        for (int32_t i = 0; alive && i < n; i++)
            if (alive[i]) {
                best = i;
                break;
            }
        free(alive);
    } else {
        sgl_result *u = op->res[1];
        for (int32_t i = 0; i < n; i++) {
            const sgl_choice_score *c = &r->choices[i];
            const sgl_choice_score *uc = u && i < u->n_choices ? &u->choices[i] : NULL;
            double s = 0;
            for (int32_t j = 0; j < c->n_tokens; j++) {
                /* Align the unconditional scores to the end: the first token
                 * may be missing (nothing to predict it from). */
                int32_t k = uc ? j - (c->n_tokens - uc->n_tokens) : -1;
                double ul = (uc && k > 0 && k < uc->n_tokens) ? f2d(uc->logprobs[k]) : 0.0;
                s += f2d(c->logprobs[j]) - ul;
            }
            uncond_norm[i] = c->n_tokens ? s / c->n_tokens : -INFINITY;
        }
        for (int32_t i = 1; i < n; i++)
            if (uncond_norm[i] > uncond_norm[best]) best = i;
    }
    const char *chosen = a->choices[best];
    sgl_strbuf_puts(&st->text, chosen);
    vm_value meta = meta_base(r, r->prompt_tokens, 0, r->cached_tokens);
    if (meta.type == VM_MAP) {
        vm_map_set_cstr(meta, "normalized_prompt_logprobs", float_list(norm, n), NULL);
        vm_value itl = vm_list_new((uint32_t)n);
        for (int32_t i = 0; itl.type == VM_LIST && i < n; i++)
            vm_list_push(itl, choice_logprobs(&r->choices[i]));
        vm_map_set_cstr(meta, "input_token_logprobs", itl, NULL);
        if (a->method == VM_SELECT_UNCONDITIONAL_LIKELIHOOD) {
            vm_map_set_cstr(meta, "normalized_unconditional_prompt_logprobs",
                            float_list(uncond_norm, n), NULL);
            if (op->res[1]) {
                vm_value ul = vm_list_new((uint32_t)n);
                for (int32_t i = 0; ul.type == VM_LIST && i < op->res[1]->n_choices; i++)
                    vm_list_push(ul, choice_logprobs(&op->res[1]->choices[i]));
                vm_map_set_cstr(meta, "unconditional_token_logprobs", ul, NULL);
            }
        }
        vm_map_set_cstr(meta, "choice_index", vm_int(best), NULL);
        vm_map_set_cstr(meta, "method",
                        vm_str_from(a->method == VM_SELECT_GREEDY_TOKEN ? "greedy_token_selection"
                                    : a->method == VM_SELECT_UNCONDITIONAL_LIKELIHOOD
                                        ? "unconditional_likelihood_normalized"
                                        : "token_length_normalized"),
                        NULL);
        vm_map_set_cstr(meta, "scores",
                        float_list(a->method == VM_SELECT_UNCONDITIONAL_LIKELIHOOD ? uncond_norm : norm, n),
                        NULL);
    }
    int32_t prompt = r->prompt_tokens + (op->res[1] ? op->res[1]->prompt_tokens : 0);
    int32_t cached = r->cached_tokens + (op->res[1] ? op->res[1]->cached_tokens : 0);
    account(st, prompt, 0, cached);
    free(norm);
    free(uncond_norm);
    finish_var(st, a->name, vm_str_from(chosen), meta);
}

int vm_stream_spec_span(const vm_stream *st) {
    if (vm_link_api_spec(st->link) <= 0 || st->open_role != VM_ROLE_ASSISTANT) return 0;
    int gens = 0;
    for (const vm_sop *op = st->head; op; op = op->next) {
        if (op->kind == VM_SOP_ROLE_END) return op->role == VM_ROLE_ASSISTANT && gens >= 2 ? gens : 0;
        if (op->kind == VM_SOP_TEXT) continue;
        if (op->kind != VM_SOP_GEN || op->gen->is_select) return 0;
        gens++;
    }
    return 0; /* the turn is not closed yet */
}

/* Template text t[0..n) at out+*pos: its trailing spaces are optional in the
 * model's output (it may write "Age:34" for "Age: "). Returns where t
 * starts at or after *pos (search) or exactly at *pos, and sets *after. */
static bool spec_find(const char *out, size_t len, size_t pos, const char *t, size_t n, bool search, size_t *at,
                      size_t *after) {
    size_t core = n;
    while (core && t[core - 1] == ' ') core--;
    if (!core) {
        *at = pos;
        *after = pos;
        return true;
    }
    for (size_t i = pos; i + core <= len; i++) {
        if (!memcmp(out + i, t, core)) {
            size_t e = i + core, sp = n - core;
            while (sp && e < len && out[e] == ' ') e++, sp--;
            *at = i;
            *after = e;
            return true;
        }
        if (!search) break;
    }
    return false;
}

/* Fills the speculative run of gens from one reply (vm_stream_spec_span):
 * the reply must repeat the turn's text so far, then each gen's value runs
 * up to the template text that follows it (or its own stop string, or the
 * end). All or nothing: when the reply does not follow the template the
 * stream fails at the gen that could not be matched. */
static void apply_spec(vm_stream *st, sgl_result *r) {
    int n = st->spec_gens;
    st->spec_gens = 0;
    const char *out = r->text;
    size_t len = r->text_len, pos = 0, at, after;
    size_t start = SGL_MIN(st->role_start, st->text.len);
    char msg[700];
    while (pos < len && (out[pos] == ' ' || out[pos] == '\n')) pos++;
    if (!spec_find(out, len, pos, st->text.data ? st->text.data + start : "", st->text.len - start, false, &at,
                   &after)) {
        char q[VM_QUOTE_CAP];
        snprintf(msg, sizeof msg, "api speculative execution: the reply does not begin with the turn's text so far (%s)",
                 vm_quote_buf(q, sizeof q, r->text, len, 40));
        vm_stream_fail_at(st, st->head->gen->where, msg);
        return;
    }
    pos = after;
    size_t *vs = calloc((size_t)n * 2, sizeof *vs);
    if (!vs) {
        vm_stream_fail(st, "out of memory");
        return;
    }
    int g = 0;
    for (vm_sop *op = st->head; op && op->kind != VM_SOP_ROLE_END; op = op->next) {
        if (op->kind == VM_SOP_TEXT) {
            if (!spec_find(out, len, pos, op->text, op->len, false, &at, &after)) goto mismatch;
            pos = after;
            continue;
        }
        vm_sop *next = op->next;
        size_t end = len;
        if (next && next->kind == VM_SOP_TEXT && next->len) {
            if (!spec_find(out, len, pos, next->text, next->len, true, &at, &after)) goto mismatch;
            end = at;
        }
        for (int32_t k = 0; k < op->gen->n_stop; k++) { /* the gen's own stops still cut its value */
            const char *s = op->gen->stop[k];
            size_t sl = strlen(s);
            for (size_t i = pos; sl && i + sl <= end; i++)
                if (!memcmp(out + i, s, sl)) {
                    end = i;
                    break;
                }
        }
        vs[2 * g] = pos;
        vs[2 * g + 1] = end;
        g++;
        pos = end;
        if (next && next->kind == VM_SOP_TEXT && next->len) {
            pos = after;
            op = next;
        }
        continue;
    mismatch:
        char q[VM_QUOTE_CAP];
        snprintf(msg, sizeof msg,
                 "api speculative execution: the reply does not follow the template at gen '%s' (%s); "
                 "run without --api-spec-tokens or with a larger budget",
                 op->kind == VM_SOP_GEN ? (op->gen->name ? op->gen->name : "") : "",
                 vm_quote_buf(q, sizeof q, out + SGL_MIN(pos, len), len - SGL_MIN(pos, len), 60));
        free(vs);
        vm_stream_fail_at(st, st->head->gen->where, msg);
        return;
    }
    /* Apply: template text as written, gens with their matched values. */
    g = 0;
    while (st->head && st->head->kind != VM_SOP_ROLE_END && !st->error) {
        vm_sop *op = st->head;
        if (op->kind == VM_SOP_TEXT) {
            sgl_strbuf_append(&st->text, op->text, op->len);
        } else {
            sgl_result fr;
            memset(&fr, 0, sizeof fr);
            fr.kind = SGL_REQ_GENERATE;
            fr.finish = SGL_FINISH_STOP;
            fr.stop_token = -1;
            fr.text = sgl_strndup(out + vs[2 * g], vs[2 * g + 1] - vs[2 * g]);
            fr.text_len = fr.text ? strlen(fr.text) : 0;
            if (g == 0) { /* the one request's figures go to the first gen */
                fr.prompt_tokens = r->prompt_tokens;
                fr.completion_tokens = r->completion_tokens;
                fr.cached_tokens = r->cached_tokens;
            }
            if (fr.text) apply_gen(st, op, &fr);
            else vm_stream_fail(st, "out of memory");
            free(fr.text);
            g++;
        }
        if (st->error) break;
        pop_head(st);
    }
    free(vs);
}

void vm_stream_on_result(vm_stream *st, int slot, sgl_result *r) {
    vm_sop *op = st->head;
    if (!op || op->kind != VM_SOP_GEN || !st->in_flight || st->error) {
        sgl_result_free(r);
        return;
    }
    if (r->finish == SGL_FINISH_ABORT) {
        char msg[600];
        /* the engine's message (an HTTP error body, say) on one line */
        sgl_strbuf why = {0};
        const char *e = r->error ? r->error : "aborted";
        vm_escape(&why, e, strlen(e), 400, false);
        snprintf(msg, sizeof msg, "%s '%s': engine error: %s", op->gen->is_select ? "select" : "gen",
                 op->gen->name ? op->gen->name : "", why.data ? why.data : "");
        sgl_strbuf_free(&why);
        sgl_result_free(r);
        vm_stream_fail_at(st, op->gen->where, msg);
        return;
    }
    if (st->spec_gens) {
        apply_spec(st, r);
        sgl_result_free(r);
        if (!st->error) vm_stream_advance(st);
        return;
    } else if (!op->gen->is_select) {
        apply_gen(st, op, r);
        sgl_result_free(r);
    } else {
        sgl_result_free(op->res[slot & 1]);
        op->res[slot & 1] = r;
        if (--op->n_waiting > 0) return;
        apply_select(st, op);
    }
    if (st->error) return;
    pop_head(st);
    vm_stream_advance(st);
}

/* ---- fork / join ------------------------------------------------------------------------ */

void vm_prefill_release(vm_prefill *pf) {
    if (!pf || --pf->rc > 0) return;
    vm_prefill_abandon(pf);
    free(pf->text);
    vm_group_release(pf->group);
    free(pf);
}

/* Detaches pf's waiting list (its references pass to the caller, who
 * releases each and frees the array); *n gets its length. */
static vm_stream **take_waiting(vm_prefill *pf, uint32_t *n) {
    vm_stream **w = pf->waiting;
    *n = pf->n_waiting;
    pf->waiting = NULL;
    pf->n_waiting = pf->cap_waiting = 0;
    return w;
}

void vm_prefill_done(vm_prefill *pf) {
    pf->done = true;
    uint32_t n;
    vm_stream **w = take_waiting(pf, &n);
    for (uint32_t i = 0; i < n; i++) {
        vm_stream_advance(w[i]);
        vm_release((vm_value){.type = VM_STREAM, .as.st = w[i]});
    }
    free(w);
}

void vm_prefill_abandon(vm_prefill *pf) {
    uint32_t n;
    vm_stream **w = take_waiting(pf, &n);
    for (uint32_t i = 0; i < n; i++) vm_release((vm_value){.type = VM_STREAM, .as.st = w[i]});
    free(w);
}

static vm_value map_copy(vm_value m) {
    vm_value c = vm_map_new();
    for (uint32_t i = 0; c.type == VM_MAP && i < vm_map_len(m); i++)
        vm_map_set(c, vm_retain(m.as.m->entries[i].key), vm_retain(m.as.m->entries[i].val), NULL);
    return c;
}

int vm_stream_fork(vm_stream *parent, int n, vm_value *out, sgl_error *err) {
    if (n < 1) return sgl_error_set(err, "fork: the number of branches must be >= 1, not %d", n);
    if (n > 4096) return sgl_error_set(err, "fork: too many branches (%d)", n);
    vm_prefill *pf = NULL;
    if (parent->text.len > 0) {
        pf = calloc(1, sizeof *pf);
        if (!pf || !(pf->text = sgl_strndup(parent->text.data, parent->text.len))) {
            free(pf);
            return sgl_error_set(err, "out of memory");
        }
        pf->rc = 1;
        if ((pf->group = parent->group)) pf->group->rc++;
    }
    vm_value list = vm_list_new((uint32_t)n);
    if (list.type != VM_LIST) goto oom;
    uint32_t nth_fork = parent->n_forks++;
    for (int i = 0; i < n; i++) {
        vm_value cv = vm_stream_new(parent->link, parent->group);
        if (cv.type != VM_STREAM) goto oom;
        vm_stream *c = cv.as.st;
        c->seed_key = vm_seed_mix(parent->seed_key, 0x464b0000ULL + nth_fork /* "FK" */, (uint64_t)i);
        vm_release(c->vars);
        vm_release(c->meta);
        vm_release(c->messages);
        c->vars = map_copy(parent->vars);
        c->meta = map_copy(parent->meta);
        c->messages = vm_list_new(vm_list_len(parent->messages));
        for (uint32_t k = 0; c->messages.type == VM_LIST && k < vm_list_len(parent->messages); k++)
            vm_list_push(c->messages, vm_retain(vm_list_get(parent->messages, k)));
        if (c->vars.type != VM_MAP || c->meta.type != VM_MAP || c->messages.type != VM_LIST ||
            (parent->text.len && sgl_strbuf_append(&c->text, parent->text.data, parent->text.len) < 0)) {
            vm_release(cv);
            goto oom;
        }
        c->open_role = parent->open_role;
        c->loose_text = parent->loose_text;
        c->role_start = parent->role_start;
        c->began = parent->began;
        c->fork_base = parent->text.len;
        c->fork_branch = (uint32_t)i + 1;
        c->fork_width = (uint32_t)n;
        c->parent = parent;
        parent->hdr.rc++;
        c->fork_nvars = vm_map_len(parent->vars);
        if (parent->images.type == VM_LIST) {
            c->images = vm_list_new(vm_list_len(parent->images));
            for (uint32_t k = 0; c->images.type == VM_LIST && k < vm_list_len(parent->images); k++)
                vm_list_push(c->images, vm_retain(vm_list_get(parent->images, k)));
        }
        if (pf) {
            c->prefill = pf;
            pf->rc++;
        }
        vm_list_push(list, cv);
    }
    if (pf) {
        if (vm_link_queue_prefill(parent->link, pf) < 0) goto oom;
        vm_prefill_release(pf);
    }
    *out = list;
    return 0;
oom:
    vm_release(list);
    vm_prefill_release(pf);
    return sgl_error_set(err, "out of memory");
}

int vm_stream_join(vm_value children, bool concat, sgl_error *err) {
    if (children.type != VM_LIST)
        return sgl_error_set(err, "join: expected the list of streams fork returned, not %s",
                             vm_type_name(children.type));
    uint32_t n = vm_list_len(children);
    vm_stream *parent = NULL;
    for (uint32_t i = 0; i < n; i++) {
        vm_value c = vm_list_get(children, i);
        if (c.type != VM_STREAM)
            return sgl_error_set(err, "join: item %u is a %s, not a stream", i, vm_type_name(c.type));
        if (!c.as.st->parent)
            return sgl_error_set(err, "join: item %u is not a stream made by fork", i);
        if (parent && c.as.st->parent != parent)
            return sgl_error_set(err, "join: the streams come from different forks");
        parent = c.as.st->parent;
        if (c.as.st->error && !strncmp(c.as.st->error, "fork branch ", 12))
            return sgl_error_set(err, "join: %s", c.as.st->error);
        if (c.as.st->error) return sgl_error_set(err, "join: branch %u failed: %s", i, c.as.st->error);
    }
    if (!parent) return 0;
    /* Names in first-seen order over the children. */
    vm_value names = vm_map_new();
    if (names.type != VM_MAP) return sgl_error_set(err, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        vm_stream *c = vm_list_get(children, i).as.st;
        for (uint32_t k = c->fork_nvars; k < vm_map_len(c->vars); k++)
            vm_map_set(names, vm_retain(c->vars.as.m->entries[k].key), vm_none(), NULL);
    }
    for (uint32_t k = 0; k < vm_map_len(names); k++) {
        vm_value key = names.as.m->entries[k].key;
        vm_value vals = vm_list_new(n), metas = vm_list_new(n);
        for (uint32_t i = 0; vals.type == VM_LIST && metas.type == VM_LIST && i < n; i++) {
            vm_stream *c = vm_list_get(children, i).as.st;
            vm_value *v = vm_map_get(c->vars, key), *m = vm_map_get(c->meta, key);
            vm_list_push(vals, v ? vm_retain(*v) : vm_none());
            vm_list_push(metas, m ? vm_retain(*m) : vm_none());
        }
        group_note_var(parent->group, key, vals);
        if (vm_map_set(parent->vars, vm_retain(key), vals, err) < 0 ||
            vm_map_set(parent->meta, vm_retain(key), metas, err) < 0) {
            vm_release(names);
            return -1;
        }
    }
    vm_release(names);
    if (concat) {
        for (uint32_t i = 0; i < n; i++) {
            vm_stream *c = vm_list_get(children, i).as.st;
            size_t base = SGL_MIN(c->fork_base, c->text.len);
            if (vm_stream_append_text(parent, c->text.data + base, c->text.len - base, err) < 0)
                return -1;
        }
    }
    return 0;
}

int vm_stream_append_stream(vm_stream *st, vm_stream *other, sgl_error *err) {
    if (other->error) return sgl_error_set(err, "%s", other->error);
    /* Copies first: other may be st itself (s += s). */
    char *text = sgl_strndup(other->text.data ? other->text.data : "", other->text.len);
    uint32_t n_msgs = vm_list_len(other->messages);
    if (!text) return sgl_error_set(err, "out of memory");
    int rc = vm_stream_append_text(st, text, other->text.len, err);
    free(text);
    if (rc < 0) return -1;
    for (uint32_t i = 0; i < n_msgs; i++)
        if (vm_list_push(st->messages, vm_retain(vm_list_get(other->messages, i))) < 0)
            return sgl_error_set(err, "out of memory");
    return 0;
}
