/* link.c: queue of requests waiting to be handed to the engine, the table
 * of requests in flight, and result routing. See link.h.
 */
#include "vm/link.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

typedef enum { ENT_GEN, ENT_SCORE_COND, ENT_SCORE_UNCOND, ENT_PREFILL } ent_kind;

typedef struct link_ent {
    ent_kind kind;
    uint64_t id;       /* engine id once submitted */
    vm_stream *st;     /* retained (GEN / SCORE) */
    vm_prefill *pf;    /* retained (PREFILL) */
} link_ent;

struct vm_link {
    sgl_engine *engine;
    const chat_template *ct;
    chat_template *own_ct;
    vm_wake_fn wake;
    void *wake_ctx;
    link_ent *queued;
    uint32_t n_queued, cap_queued;
    link_ent *flight;
    uint32_t n_flight, cap_flight;
    vm_link_stats stats;
    char *uncond_prompt;
    FILE *trace;
    int32_t api_spec_tokens; /* > 0: speculative execution on chat-only engines */
    bool chat_only;          /* the engine takes chat turns only */
    bool constraints;        /* the engine takes regex / json_schema / grammar */
    uint32_t max_inflight; /* 0: no limit */
    bool no_prefill;
    uint64_t run_seed;
};

void vm_link_set_api_spec(vm_link *l, int32_t tokens) { l->api_spec_tokens = tokens; }
int32_t vm_link_api_spec(const vm_link *l) { return l->chat_only ? l->api_spec_tokens : 0; }

void vm_link_set_trace(vm_link *l, FILE *out) { l->trace = out; }
void vm_link_set_limits(vm_link *l, int max_inflight, bool no_prefill) {
    l->max_inflight = max_inflight > 0 ? (uint32_t)max_inflight : 0;
    l->no_prefill = no_prefill;
}

/* Writes at most max bytes of s[0..n) JSON-quoted (the tail when tail). */
static void trace_text(FILE *out, const char *s, size_t n, size_t max, bool tail) {
    size_t from = 0;
    if (n > max) {
        if (tail) from = n - max;
        else n = max;
        if (tail) fputs("...", out);
    }
    vm_value v = vm_str_new(s + from, n - from);
    sgl_strbuf sb = {0};
    vm_repr_append(&sb, v);
    fputs(sb.data ? sb.data : "\"\"", out);
    sgl_strbuf_free(&sb);
    vm_release(v);
    if (!tail && max < n) fputs("...", out);
}

static const char *ent_name(int kind) {
    static const char *const names[] = {"generate", "score", "score-unconditional", "prefill"};
    return names[kind];
}

vm_link *vm_link_new(sgl_engine *engine, const chat_template *ct) {
    vm_link *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->engine = engine;
    l->ct = ct;
    /* A fresh seed per run: two runs without --seed sample differently. */
    uint64_t seed = 0;
#if defined(__linux__)
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) seed = 0;
#endif
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)l;
    }
    l->run_seed = seed;
    sgl_engine_caps caps;
    sgl_engine_caps_get(engine, &caps);
    l->chat_only = !caps.raw_prompt;
    l->constraints = caps.constraints;
    if (!ct) {
        l->own_ct = chat_template_from_family("plain", NULL);
        l->ct = l->own_ct;
    }
    return l;
}

static void ent_release(link_ent *e) {
    if (e->st) vm_release((vm_value){.type = VM_STREAM, .as.st = e->st});
    if (e->pf) vm_prefill_release(e->pf);
    e->st = NULL;
    e->pf = NULL;
}

void vm_link_free(vm_link *l) {
    if (!l) return;
    l->wake = NULL;
    /* A prefill still queued or in flight never finishes now: its waiting
     * streams must let go of it (vm_prefill_abandon breaks their cycle). */
    for (uint32_t i = 0; i < l->n_queued; i++) {
        if (l->queued[i].pf) vm_prefill_abandon(l->queued[i].pf);
        ent_release(&l->queued[i]);
    }
    for (uint32_t i = 0; i < l->n_flight; i++) {
        if (l->flight[i].pf) vm_prefill_abandon(l->flight[i].pf);
        ent_release(&l->flight[i]);
    }
    free(l->queued);
    free(l->flight);
    chat_template_free(l->own_ct);
    free(l->uncond_prompt);
    free(l);
}

void vm_link_set_waker(vm_link *l, vm_wake_fn fn, void *ctx) {
    l->wake = fn;
    l->wake_ctx = ctx;
}

void vm_link_wake(vm_link *l, void *fiber) {
    if (l->wake) l->wake(l->wake_ctx, fiber);
}

const chat_template *vm_link_template(vm_link *l) { return l->ct; }
sgl_engine *vm_link_engine(vm_link *l) { return l->engine; }

uint64_t vm_link_run_seed(const vm_link *l) { return l ? l->run_seed : 0; }
void vm_link_set_run_seed(vm_link *l, uint64_t seed) { l->run_seed = seed; }

void vm_link_set_uncond_prompt(vm_link *l, const char *text) {
    free(l->uncond_prompt);
    l->uncond_prompt = text && *text ? sgl_strdup(text) : NULL;
}

static int push_ent(link_ent **arr, uint32_t *n, uint32_t *cap, link_ent e) {
    if (*n == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 16;
        link_ent *na = realloc(*arr, nc * sizeof *na);
        if (!na) return -1;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = e;
    return 0;
}

int vm_link_queue_gen(vm_link *l, vm_stream *st) {
    vm_sop *op = st->head;
    int n = 1;
    link_ent e = {.kind = op->gen->is_select ? ENT_SCORE_COND : ENT_GEN, .st = st};
    if (push_ent(&l->queued, &l->n_queued, &l->cap_queued, e) < 0) return -1;
    st->hdr.rc++;
    if (op->gen->is_select && op->gen->method == VM_SELECT_UNCONDITIONAL_LIKELIHOOD) {
        e.kind = ENT_SCORE_UNCOND;
        if (push_ent(&l->queued, &l->n_queued, &l->cap_queued, e) < 0) {
            op->n_waiting = 1;
            return -1;
        }
        st->hdr.rc++;
        n = 2;
    }
    op->n_waiting = n;
    return 0;
}

int vm_link_queue_prefill(vm_link *l, vm_prefill *pf) {
    if (l->no_prefill) {
        vm_prefill_done(pf);
        return 0;
    }
    link_ent e = {.kind = ENT_PREFILL, .pf = pf};
    if (push_ent(&l->queued, &l->n_queued, &l->cap_queued, e) < 0) return -1;
    pf->rc++;
    return 0;
}

/* The chat view of st's prompt (sgl_request.messages): its finished turns
 * and the open one. *open_copy holds the open turn's content (caller frees
 * it and the array). Returns the array (NULL when the stream has no turns). */
static sgl_chat_msg *chat_view(vm_stream *st, int32_t *n_out, bool *open_turn, char **open_copy) {
    uint32_t n = vm_list_len(st->messages);
    *n_out = 0;
    *open_turn = false;
    *open_copy = NULL;
    if (!n && st->open_role < 0) return NULL;
    sgl_chat_msg *m = calloc((size_t)n + 1, sizeof *m);
    if (!m) return NULL;
    int32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        vm_value msg = vm_list_get(st->messages, i);
        vm_value *role = vm_map_get_cstr(msg, "role"), *content = vm_map_get_cstr(msg, "content");
        if (!role || !content || role->type != VM_STR || content->type != VM_STR) continue;
        m[k].role = vm_str_cstr(*role);
        m[k].content = vm_str_cstr(*content);
        k++;
    }
    if (st->open_role >= 0) {
        size_t start = SGL_MIN(st->role_start, st->text.len);
        *open_copy = sgl_strndup(st->text.data ? st->text.data + start : "", st->text.len - start);
        m[k].role = vm_role_name((vm_role)st->open_role);
        m[k].content = *open_copy ? *open_copy : "";
        k++;
        *open_turn = true;
    }
    *n_out = k;
    return m;
}

/* Where each image of st sits in the chat view m[0..n): the turn (-1: in no
 * turn) and the byte offset inside its content. Turn contents appear in the
 * text in order (between the template's role prefixes and suffixes), so each
 * is found from where the previous one ended; an image's text offset then
 * falls inside (or at an end of) exactly one of them. */
static void image_places(const vm_stream *st, const sgl_chat_msg *m, int32_t n, const vm_value *offs,
                         int32_t n_img, int32_t *turn, int32_t *at) {
    size_t starts[256], cursor = 0;
    int32_t nt = SGL_MIN(n, 256);
    const char *text = st->text.data ? st->text.data : "";
    for (int32_t i = 0; i < nt; i++) {
        bool open = i == n - 1 && st->open_role >= 0;
        const char *hit = open ? text + SGL_MIN(st->role_start, st->text.len) : strstr(text + cursor, m[i].content);
        starts[i] = hit ? (size_t)(hit - text) : cursor;
        cursor = starts[i] + strlen(m[i].content);
    }
    for (int32_t k = 0; k < n_img; k++) {
        turn[k] = -1;
        at[k] = 0;
        size_t o = offs[k].type == VM_INT && offs[k].as.i > 0 ? (size_t)offs[k].as.i : 0;
        for (int32_t i = 0; i < nt; i++)
            if (o >= starts[i] && o <= starts[i] + strlen(m[i].content)) {
                turn[k] = i;
                at[k] = (int32_t)(o - starts[i]);
                break;
            }
    }
}

/* Builds and submits one queued entry. Returns the engine id or 0 (err). */
static uint64_t submit_ent(vm_link *l, link_ent *e, sgl_error *err) {
    sgl_request req;
    memset(&req, 0, sizeof req);
    req.params = sgl_sampling_params_default();
    if (e->kind == ENT_PREFILL) {
        req.kind = SGL_REQ_PREFILL;
        req.text = e->pf->text;
        l->stats.prefill_requests++;
        return sgl_engine_submit(l->engine, &req, err);
    }
    vm_stream *st = e->st;
    vm_gen_args *a = st->head->gen;
    req.text = st->text.data ? st->text.data : "";
    const char *img[64];
    vm_value img_off[64];
    int32_t img_turn[64], img_at[64];
    if (st->images.type == VM_LIST && e->kind != ENT_SCORE_UNCOND) {
        for (uint32_t i = 0; i < vm_list_len(st->images) && req.n_images < 64; i++) {
            vm_value *p = vm_map_get_cstr(vm_list_get(st->images, i), "path");
            vm_value *o = vm_map_get_cstr(vm_list_get(st->images, i), "offset");
            if (!p || p->type != VM_STR) continue;
            img_off[req.n_images] = o ? *o : vm_int(0);
            img[req.n_images++] = vm_str_cstr(*p);
        }
        req.images = img;
    }
    if (e->kind == ENT_GEN) st->spec_gens = vm_stream_spec_span(st);
    if (e->kind == ENT_GEN && st->spec_gens) {
        /* one request for the whole run: the turn from its start, no stops */
        req.kind = SGL_REQ_GENERATE;
        req.params = a->sp;
        req.params.max_new_tokens = l->api_spec_tokens;
        req.params.min_new_tokens = 0;
        l->stats.generate_requests++;
        l->stats.spec_requests++;
        l->stats.spec_gens += st->spec_gens;
    } else if (e->kind == ENT_GEN) {
        req.kind = SGL_REQ_GENERATE;
        req.params = a->sp;
        req.params.stop = (const char *const *)a->stop;
        req.params.n_stop = a->n_stop;
        req.params.stop_token_ids = a->stop_ids;
        req.params.n_stop_token_ids = a->n_stop_ids;
        /* dtype= constrains only engines that can (elsewhere the output is
         * parsed after generation, as before constraints existed) */
        req.params.regex = a->regex ? a->regex : l->constraints ? vm_dtype_regex(a->dtype) : NULL;
        req.params.json_schema = a->json_schema;
        req.params.grammar = a->grammar;
        req.stream = a->stream;
        l->stats.generate_requests++;
    } else {
        req.kind = SGL_REQ_SCORE;
        req.choices = (const char *const *)a->choices;
        req.n_choices = a->n_choices;
        if (e->kind == ENT_SCORE_UNCOND) req.text = l->uncond_prompt ? l->uncond_prompt : "";
        l->stats.score_requests++;
    }
    char *open_copy = NULL;
    sgl_chat_msg *msgs = NULL;
    if (e->kind != ENT_SCORE_UNCOND) {
        msgs = chat_view(st, &req.n_messages, &req.open_turn, &open_copy);
        if (req.n_images && msgs) {
            image_places(st, msgs, req.n_messages, img_off, req.n_images, img_turn, img_at);
            req.image_turns = img_turn;
            req.image_offsets = img_at;
        }
        if (st->spec_gens && req.open_turn) msgs[req.n_messages - 1].content = "";
        req.messages = msgs;
        req.loose_text = st->loose_text;
    }
    uint64_t id = sgl_engine_submit(l->engine, &req, err);
    free(msgs);
    free(open_copy);
    return id;
}

/* What a stream of dead group g fails with: the instance's error. */
static const char *dead_error(const vm_group *g) { return g->error ? g->error : "its instance failed"; }

int vm_link_flush(vm_link *l) {
    uint32_t n = l->n_queued;
    int submitted = 0;
    /* Walk by index: the array may grow (and move) while we walk. */
    for (uint32_t i = 0; i < n; i++) {
        if (l->max_inflight && l->n_flight >= l->max_inflight) {
            n = i; /* the rest waits for a later flush */
            break;
        }
        link_ent e = l->queued[i];
        if (e.st && e.st->group && e.st->group->dead && !e.st->error) vm_stream_fail(e.st, dead_error(e.st->group));
        if (e.st && (e.st->error || !e.st->head)) { /* failed meanwhile */
            ent_release(&e);
            continue;
        }
        if (e.pf && e.pf->group && e.pf->group->dead) { /* nobody will read the branches */
            vm_group *g = e.pf->group;
            for (uint32_t k = 0; k < e.pf->n_waiting; k++)
                if (e.pf->waiting[k]->group == g) vm_stream_fail(e.pf->waiting[k], dead_error(g));
            vm_prefill_done(e.pf);
            ent_release(&e);
            continue;
        }
        sgl_error err = {{0}};
        e.id = submit_ent(l, &e, &err);
        if (l->trace) {
            fprintf(l->trace, "[req %llu] %s", (unsigned long long)e.id, ent_name(e.kind));
            const char *text = e.pf ? e.pf->text : (e.st->text.data ? e.st->text.data : "");
            size_t tl = e.pf ? strlen(e.pf->text) : e.st->text.len;
            if (e.st) {
                vm_gen_args *a = e.st->head->gen;
                fprintf(l->trace, " %s '%s'%s%s", a->is_select ? "select" : "gen", a->name ? a->name : "",
                        a->where ? " at " : "", a->where ? a->where : "");
            }
            fprintf(l->trace, " prompt %zu bytes: ", tl);
            trace_text(l->trace, text, tl, 60, true);
            if (!e.id) fprintf(l->trace, " REFUSED: %s", err.msg);
            fputc('\n', l->trace);
        }
        if (!e.id || push_ent(&l->flight, &l->n_flight, &l->cap_flight, e) < 0) {
            if (e.pf) vm_prefill_done(e.pf);
            if (e.st) {
                char msg[1100];
                snprintf(msg, sizeof msg, "engine refused the request: %s",
                         err.msg[0] ? err.msg : "out of memory");
                vm_stream_fail_at(e.st, e.st->head && e.st->head->gen ? e.st->head->gen->where : NULL,
                                  msg);
            }
            ent_release(&e);
            continue;
        }
        submitted++;
    }
    /* A failed prefill above may have let branches queue new requests:
     * keep those for the next flush. */
    memmove(l->queued, l->queued + n, (l->n_queued - n) * sizeof *l->queued);
    l->n_queued -= n;
    if (submitted) {
        l->stats.flushes++;
        if (submitted > l->stats.max_batch) l->stats.max_batch = submitted;
    }
    return submitted;
}

int vm_link_interrupt(vm_link *l, const char *msg, double wait_s) {
    /* By index and by value: a prefill's branches queue their requests
     * (and may move the array) when it is done; they are failed in turn. */
    for (uint32_t i = 0; i < l->n_queued; i++) {
        link_ent e = l->queued[i];
        if (e.pf) vm_prefill_done(e.pf);
        if (e.st) vm_stream_fail(e.st, msg);
        ent_release(&e);
    }
    l->n_queued = 0;
    for (uint32_t i = 0; i < l->n_flight; i++) sgl_engine_cancel(l->engine, l->flight[i].id);
    double end = sgl_now() + wait_s;
    for (double left = wait_s; l->n_flight > 0 && left > 0; left = end - sgl_now()) vm_link_wait(l, left);
    return (int)l->n_flight;
}

int vm_link_cancel_group(vm_link *l, const vm_group *g) {
    int n = 0;
    for (uint32_t i = 0; i < l->n_flight; i++) {
        const link_ent *e = &l->flight[i];
        if ((e->st && e->st->group == g) || (e->pf && e->pf->group == g))
            n += sgl_engine_cancel(l->engine, e->id) == 0;
    }
    return n;
}

int vm_link_outstanding(const vm_link *l) { return (int)(l->n_queued + l->n_flight); }

static void route(vm_link *l, sgl_result *r) {
    uint32_t i;
    for (i = 0; i < l->n_flight; i++)
        if (l->flight[i].id == r->id) break;
    if (i == l->n_flight) { /* not ours (e.g. from before a reset) */
        sgl_result_free(r);
        return;
    }
    if (r->partial) { /* a streamed piece: the request stays in flight */
        if (l->flight[i].st) vm_stream_on_partial(l->flight[i].st, r);
        sgl_result_free(r);
        return;
    }
    link_ent e = l->flight[i];
    l->flight[i] = l->flight[--l->n_flight];
    if (l->trace) {
        fprintf(l->trace, "[req %llu] done %s: prompt %d, cached %d, completion %d tokens",
                (unsigned long long)r->id, sgl_finish_name(r->finish), r->prompt_tokens, r->cached_tokens,
                r->completion_tokens);
        if (r->error) fprintf(l->trace, ", error: %s", r->error);
        if (r->kind == SGL_REQ_GENERATE) {
            fputs(", text ", l->trace);
            trace_text(l->trace, r->text, r->text_len, 80, false);
        }
        for (int32_t c = 0; c < r->n_choices; c++)
            fprintf(l->trace, "%s%.3f", c ? ", " : ", choice mean logprobs ",
                    r->choices[c].n_tokens ? r->choices[c].sum / r->choices[c].n_tokens : 0.0);
        fputc('\n', l->trace);
    }
    l->stats.prompt_tokens += r->prompt_tokens;
    l->stats.completion_tokens += r->completion_tokens;
    l->stats.cached_tokens += r->cached_tokens;
    if (e.kind == ENT_PREFILL) {
        sgl_result_free(r);
        vm_prefill_done(e.pf);
    } else {
        vm_stream_on_result(e.st, e.kind == ENT_SCORE_UNCOND ? 1 : 0, r);
    }
    ent_release(&e);
}

int vm_link_wait(vm_link *l, double timeout_s) {
    if (l->n_flight == 0) return 0;
    sgl_result *r = sgl_engine_wait(l->engine, timeout_s);
    if (!r) return 0;
    int n = 0;
    do {
        /* After a streamed piece, let its readers (text_iter) run before
         * taking more: pieces then reach the program as they come. */
        bool piece = r->partial;
        route(l, r);
        n++;
        if (piece) break;
    } while ((r = sgl_engine_poll(l->engine)) != NULL);
    return n;
}

void vm_link_stats_get(const vm_link *l, vm_link_stats *out) { *out = l->stats; }
