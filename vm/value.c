/* value.c: SGVM values: allocation and reference counting, lists and
 * insertion-ordered maps, equality/hashing, operators, printing, and a
 * small JSON reader/writer (our own, so integers stay ints and objects keep
 * their order). Ownership rules are in value.h.
 */
#include "vm/value.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <threads.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/unicode.h"
#include "vm/stream.h"

_Static_assert(sizeof(vm_obj) == 8, "vm_obj stays two words");

#define XSTR_(x) #x
#define XSTR(x) XSTR_(x)

static int64_t live_objects;

int64_t vm_live_objects(void) { return live_objects; }

/* ---- memory accounts ---------------------------------------------------------------- */

typedef struct mem_acct {
    int64_t used, limit;
    uint16_t parent;
    uint8_t state; /* 0 free, 1 open, 2 closed (freed when used reaches 0) */
} mem_acct;

#define MEM_ACCTS 65536
static _Thread_local mem_acct *accts;     /* [MEM_ACCTS], [0] unused */
static _Thread_local uint32_t acct_hi;    /* ids below this have been handed out */
static _Thread_local uint16_t acct_free;  /* free list threaded through parent; 0 = empty */
static _Thread_local uint16_t acct_cur;
_Thread_local int64_t vm_mem_refused_at;
#define acct_refused vm_mem_refused_at

/* A thread's account table is freed when the thread ends (server threads
 * come and go with their connections). */
static once_flag accts_once = ONCE_FLAG_INIT;
static tss_t accts_key;
static void accts_release(void *table) { free(table); }
static void accts_key_init(void) { (void)tss_create(&accts_key, accts_release); }

uint32_t vm_mem_open(uint32_t parent, int64_t limit) {
    if (!accts) {
        accts = calloc(MEM_ACCTS, sizeof *accts);
        if (!accts) return 0;
        acct_hi = 1;
        call_once(&accts_once, accts_key_init);
        (void)tss_set(accts_key, accts);
    }
    uint32_t id;
    if (acct_free) {
        id = acct_free;
        acct_free = accts[id].parent;
    } else if (acct_hi < MEM_ACCTS) {
        id = acct_hi++;
    } else {
        return 0;
    }
    accts[id] = (mem_acct){0, limit > 0 ? limit : 0, (uint16_t)(parent < MEM_ACCTS ? parent : 0), 1};
    return id;
}

static void acct_maybe_free(uint16_t id) {
    mem_acct *a = &accts[id];
    if (a->state != 2 || a->used != 0) return;
    a->state = 0;
    a->parent = acct_free;
    acct_free = id;
}

void vm_mem_close(uint32_t id) {
    if (!id || !accts || id >= MEM_ACCTS || accts[id].state != 1) return;
    accts[id].state = 2;
    if (acct_cur == id) acct_cur = 0;
    acct_maybe_free((uint16_t)id);
}

uint32_t vm_mem_enter(uint32_t id) {
    uint32_t prev = acct_cur;
    acct_cur = (uint16_t)(id < MEM_ACCTS ? id : 0);
    return prev;
}

int64_t vm_mem_used(uint32_t id) { return id && accts && id < MEM_ACCTS ? accts[id].used : 0; }

int64_t vm_mem_refused(void) {
    int64_t r = acct_refused;
    acct_refused = 0;
    return r;
}

/* Charges n bytes to account id and its parents. Returns 0, or -1 (and
 * records the limit) when a limit would be exceeded; nothing is charged
 * then. */
static int mem_charge(uint16_t id, int64_t n) {
    if (!id || n <= 0) return 0;
    for (uint16_t a = id; a; a = accts[a].parent)
        if (accts[a].limit && accts[a].used + n > accts[a].limit) {
            acct_refused = accts[a].limit;
            return -1;
        }
    for (uint16_t a = id; a; a = accts[a].parent) accts[a].used += n;
    return 0;
}

static void mem_credit(uint16_t id, int64_t n) {
    if (!id || n <= 0) return;
    for (uint16_t a = id, next; a; a = next) {
        next = accts[a].parent;
        accts[a].used -= n;
        acct_maybe_free(a);
    }
}

/* Bytes an object holds (header, inline data and owned buffers), as
 * charged. */
static int64_t obj_bytes(const vm_obj *o) {
    switch ((vm_type)o->type) {
    case VM_STR: return (int64_t)sizeof(vm_str) + ((const vm_str *)o)->cap + 1;
    case VM_LIST: return (int64_t)sizeof(vm_list) + (int64_t)((const vm_list *)o)->cap * (int64_t)sizeof(vm_value);
    case VM_MAP: {
        const vm_map *m = (const vm_map *)o;
        return (int64_t)sizeof(vm_map) + (int64_t)m->cap * (int64_t)sizeof(vm_map_entry) +
               (int64_t)m->index_cap * (int64_t)sizeof(int32_t);
    }
    case VM_FN: return (int64_t)sizeof(vm_fn);
    case VM_ITER: return (int64_t)sizeof(vm_iter);
    default: return 0;
    }
}

/* Charges growth of o's buffers to o's account. */
static int obj_grow(vm_obj *o, int64_t n) { return mem_charge(o->acct, n); }

/* Explicit work stacks: every walk over nested values (release, equality,
 * ordering, printing, JSON, copying) keeps its pending frames in a heap
 * array instead of the C stack, so a value nested a million deep costs
 * memory proportional to its size and never overflows the C stack. The
 * first WS_INLINE frames live in the caller's buffer. */
#define WS_INLINE 32

typedef struct wstack {
    void *items;      /* frames of elem bytes each */
    size_t len, cap, elem;
    bool heap;        /* items was malloc'd (else the caller's inline buffer) */
} wstack;

static void ws_init(wstack *w, void *inline_buf, size_t elem) {
    w->items = inline_buf;
    w->len = 0;
    w->cap = WS_INLINE;
    w->elem = elem;
    w->heap = false;
}

/* Returns a pointer to a new uninitialised top frame, or NULL on OOM. */
static void *ws_push(wstack *w) {
    if (w->len == w->cap) {
        size_t nc = w->cap * 2;
        void *ni;
        if (w->heap) {
            ni = realloc(w->items, nc * w->elem);
        } else {
            ni = malloc(nc * w->elem);
            if (ni) memcpy(ni, w->items, w->len * w->elem);
        }
        if (!ni) return NULL;
        w->items = ni;
        w->cap = nc;
        w->heap = true;
    }
    return (char *)w->items + w->elem * w->len++;
}

static void *ws_top(wstack *w) { return w->len ? (char *)w->items + w->elem * (w->len - 1) : NULL; }

static void ws_free(wstack *w) {
    if (w->heap) free(w->items);
    w->items = NULL;
    w->len = w->cap = 0;
}

void *vm_obj_alloc(size_t size, vm_type t) {
    /* Streams free themselves (stream.c) and are not charged. */
    uint16_t acct = t == VM_STREAM ? 0 : acct_cur;
    if (mem_charge(acct, (int64_t)size) < 0) return NULL;
    vm_obj *o = calloc(1, size);
    if (!o) {
        mem_credit(acct, (int64_t)size);
        return NULL;
    }
    o->rc = 1;
    o->type = (uint16_t)t;
    o->acct = acct;
    live_objects++;
    return o;
}

/* Undoes vm_obj_alloc for an object never handed out (size as charged). */
static void obj_unalloc(vm_obj *o, size_t size) {
    mem_credit(o->acct, (int64_t)size);
    free(o);
    live_objects--;
}

const char *vm_type_name(vm_type t) {
    static const char *const names[] = {"none", "bool", "int", "float", "str",
                                        "list", "map", "fn", "builtin", "stream", "iterator"};
    return (unsigned)t < SGL_ARRAY_LEN(names) ? names[t] : "?";
}

/* ---- strings, lists, maps, functions ----------------------------------------- */

vm_value vm_str_new(const char *s, size_t n) {
    if (n > UINT32_MAX - 1) return vm_none();
    vm_str *o = vm_obj_alloc(sizeof(vm_str) + n + 1, VM_STR);
    if (!o) return vm_none();
    if (n) memcpy(o->data, s, n);
    o->data[n] = 0;
    o->len = (uint32_t)n;
    o->cap = (uint32_t)n;
    vm_value v = {.type = VM_STR, .as.s = o};
    return v;
}

int vm_str_append_inplace(vm_value *sv, const char *b, size_t n) {
    vm_str *o = sv->as.s;
    size_t need = (size_t)o->len + n;
    if (need > UINT32_MAX - 1) return -1;
    if (need > o->cap) {
        size_t nc = SGL_MAX(need, (size_t)o->cap * 2);
        if (nc > UINT32_MAX - 1) nc = need;
        if (obj_grow(&o->hdr, (int64_t)(nc - o->cap)) < 0) {
            nc = need; /* the doubling may not fit where the bytes do */
            if (obj_grow(&o->hdr, (int64_t)(nc - o->cap)) < 0) return -1;
        }
        vm_str *no = realloc(o, sizeof(vm_str) + nc + 1);
        if (!no) {
            mem_credit(o->hdr.acct, (int64_t)(nc - o->cap));
            return -1;
        }
        o = no;
        o->cap = (uint32_t)nc;
        sv->as.s = o;
    }
    memcpy(o->data + o->len, b, n);
    o->len = (uint32_t)need;
    o->data[need] = 0;
    o->hash = 0;
    return 0;
}

vm_value vm_str_from(const char *cstr) { return vm_str_new(cstr, strlen(cstr)); }

vm_value vm_str_take(sgl_strbuf *sb) {
    vm_value v = vm_str_new(sb->data ? sb->data : "", sb->len);
    sgl_strbuf_free(sb);
    return v;
}

vm_value vm_list_new(uint32_t cap) {
    vm_list *o = vm_obj_alloc(sizeof(vm_list), VM_LIST);
    if (!o) return vm_none();
    if (cap) {
        int64_t n = (int64_t)cap * (int64_t)sizeof(vm_value);
        if (obj_grow(&o->hdr, n) < 0) {
            obj_unalloc(&o->hdr, sizeof(vm_list));
            return vm_none();
        }
        o->items = malloc((size_t)n);
        if (!o->items) {
            mem_credit(o->hdr.acct, n);
            obj_unalloc(&o->hdr, sizeof(vm_list));
            return vm_none();
        }
        o->cap = cap;
    }
    vm_value v = {.type = VM_LIST, .as.l = o};
    return v;
}

vm_value vm_map_new(void) {
    vm_map *o = vm_obj_alloc(sizeof(vm_map), VM_MAP);
    if (!o) return vm_none();
    vm_value v = {.type = VM_MAP, .as.m = o};
    return v;
}

vm_value vm_fn_new(const void *code, uint32_t index, const char *name) {
    vm_fn *o = vm_obj_alloc(sizeof(vm_fn), VM_FN);
    if (!o) return vm_none();
    o->code = code;
    o->index = index;
    o->name = sgl_strdup(name ? name : "?");
    vm_value v = {.type = VM_FN, .as.fn = o};
    return v;
}

int vm_iter_new(vm_value src, vm_value *out, sgl_error *err) {
    if (src.type != VM_LIST && src.type != VM_MAP && src.type != VM_STR)
        return sgl_error_set(err, "'%s' value is not iterable", vm_type_name(src.type));
    vm_iter *it = vm_obj_alloc(sizeof(vm_iter), VM_ITER);
    if (!it) return sgl_error_set(err, "out of memory");
    it->src = vm_retain(src);
    out->type = VM_ITER;
    out->as.it = it;
    return 0;
}

bool vm_iter_next(vm_value iv, vm_value *item) {
    vm_iter *it = iv.as.it;
    vm_value src = it->src;
    switch (src.type) {
    case VM_LIST:
        if (it->pos >= src.as.l->len) return false;
        *item = vm_retain(src.as.l->items[it->pos++]);
        return true;
    case VM_MAP:
        if (it->pos >= src.as.m->len) return false;
        *item = vm_retain(src.as.m->entries[it->pos++].key);
        return true;
    case VM_STR: {
        uint32_t n = src.as.s->len, p = it->pos;
        if (p >= n) return false;
        unsigned char c = (unsigned char)src.as.s->data[p];
        uint32_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (p + k > n) k = n - p;
        *item = vm_str_new(src.as.s->data + p, k);
        it->pos = p + k;
        return item->type == VM_STR;
    }
    default:
        return false;
    }
}

/* Frees one object whose count reached zero. Children whose count drops to
 * zero are pushed on w (or, if the stack cannot grow, released through a
 * nested call, which only happens when memory is already exhausted). */
static void obj_free_one(vm_obj *o, wstack *w);

static void child_drop(vm_value c, wstack *w) {
    if (!vm_is_obj(c)) return;
    if (--c.as.obj->rc > 0) return;
    vm_obj **slot = ws_push(w);
    if (slot) *slot = c.as.obj;
    else obj_free_one(c.as.obj, w);
}

static void obj_free_one(vm_obj *o, wstack *w) {
    mem_credit(o->acct, obj_bytes(o));
    switch ((vm_type)o->type) {
    case VM_STR:
        break;
    case VM_LIST: {
        vm_list *l = (vm_list *)o;
        for (uint32_t i = 0; i < l->len; i++) child_drop(l->items[i], w);
        free(l->items);
        break;
    }
    case VM_MAP: {
        vm_map *m = (vm_map *)o;
        for (uint32_t i = 0; i < m->len; i++) {
            child_drop(m->entries[i].key, w);
            child_drop(m->entries[i].val, w);
        }
        free(m->entries);
        free(m->index);
        break;
    }
    case VM_FN:
        free(((vm_fn *)o)->name);
        break;
    case VM_ITER:
        child_drop(((vm_iter *)o)->src, w);
        break;
    case VM_STREAM:
        vm_stream_destroy((vm_stream *)o);
        live_objects--;
        return; /* the stream frees itself */
    default:
        break;
    }
    free(o);
    live_objects--;
}

void vm_release(vm_value v) {
    if (!vm_is_obj(v)) return;
    vm_obj *o = v.as.obj;
    if (--o->rc > 0) return;
    vm_obj *buf[WS_INLINE];
    wstack w;
    ws_init(&w, buf, sizeof(vm_obj *));
    obj_free_one(o, &w);
    while (w.len) {
        vm_obj *c = *(vm_obj **)ws_top(&w);
        w.len--;
        obj_free_one(c, &w);
    }
    ws_free(&w);
}

bool vm_truthy(vm_value v) {
    switch (v.type) {
    case VM_NONE: return false;
    case VM_BOOL: return v.as.b;
    case VM_INT: return v.as.i != 0;
    case VM_FLOAT: return v.as.f != 0.0;
    case VM_STR: return v.as.s->len > 0;
    case VM_LIST: return v.as.l->len > 0;
    case VM_MAP: return v.as.m->len > 0;
    default: return true;
    }
}

int vm_list_push(vm_value list, vm_value v) {
    vm_list *l = list.as.l;
    if (l->len == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 4;
        int64_t grow = (int64_t)(nc - l->cap) * (int64_t)sizeof(vm_value);
        if (obj_grow(&l->hdr, grow) < 0) {
            vm_release(v);
            return -1;
        }
        vm_value *ni = realloc(l->items, nc * sizeof(vm_value));
        if (!ni) {
            mem_credit(l->hdr.acct, grow);
            vm_release(v);
            return -1;
        }
        l->items = ni;
        l->cap = nc;
    }
    l->items[l->len++] = v;
    return 0;
}

vm_value vm_list_get(vm_value list, uint32_t i) {
    return i < list.as.l->len ? list.as.l->items[i] : vm_none();
}

int vm_list_set(vm_value list, uint32_t i, vm_value v) {
    if (i >= list.as.l->len) {
        vm_release(v);
        return -1;
    }
    vm_release(list.as.l->items[i]);
    list.as.l->items[i] = v;
    return 0;
}

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

bool vm_hash(vm_value v, uint64_t *h) {
    switch (v.type) {
    case VM_NONE: *h = 0x1234567ull; return true;
    case VM_BOOL: *h = mix64(v.as.b ? 1 : 0); return true; /* true == 1 is not a rule here */
    case VM_INT: *h = mix64((uint64_t)v.as.i); return true;
    case VM_FLOAT: {
        double f = v.as.f;
        if (f == floor(f) && fabs(f) < 9.2e18) {
            *h = mix64((uint64_t)(int64_t)f);
            return true;
        }
        uint64_t bits;
        memcpy(&bits, &f, sizeof bits);
        *h = mix64(bits ^ 0x5555);
        return true;
    }
    case VM_STR: {
        vm_str *s = v.as.s;
        if (!s->hash) {
            uint64_t x = 1469598103934665603ull;
            for (uint32_t i = 0; i < s->len; i++) x = (x ^ (uint8_t)s->data[i]) * 1099511628211ull;
            s->hash = x ? x : 1;
        }
        *h = s->hash;
        return true;
    }
    case VM_BUILTIN: *h = mix64(0xb000 + (uint64_t)v.as.builtin); return true;
    case VM_FN: *h = mix64((uint64_t)(uintptr_t)v.as.fn); return true;
    default: return false;
    }
}

static int map_find(const vm_map *m, vm_value key, uint64_t h) {
    if (!m->index_cap) return -1;
    uint32_t mask = m->index_cap - 1;
    for (uint32_t p = (uint32_t)h & mask;; p = (p + 1) & mask) {
        int32_t e = m->index[p];
        if (e < 0) return -1;
        if (m->entries[e].hash == h && vm_equal(m->entries[e].key, key)) return e;
    }
}

static int map_reindex(vm_map *m, uint32_t cap) {
    int64_t grow = ((int64_t)cap - m->index_cap) * (int64_t)sizeof(int32_t);
    if (obj_grow(&m->hdr, grow) < 0) return -1;
    int32_t *idx = malloc(cap * sizeof(int32_t));
    if (!idx) {
        mem_credit(m->hdr.acct, grow);
        return -1;
    }
    for (uint32_t i = 0; i < cap; i++) idx[i] = -1;
    for (uint32_t e = 0; e < m->len; e++) {
        uint32_t p = (uint32_t)m->entries[e].hash & (cap - 1);
        while (idx[p] >= 0) p = (p + 1) & (cap - 1);
        idx[p] = (int32_t)e;
    }
    free(m->index);
    m->index = idx;
    m->index_cap = cap;
    return 0;
}

int vm_map_set(vm_value map, vm_value key, vm_value val, sgl_error *err) {
    vm_map *m = map.as.m;
    uint64_t h;
    if (!vm_hash(key, &h)) {
        sgl_error_set(err, "unhashable map key of type %s", vm_type_name(key.type));
        goto fail;
    }
    int e = map_find(m, key, h);
    if (e >= 0) {
        vm_release(key);
        vm_release(m->entries[e].val);
        m->entries[e].val = val;
        return 0;
    }
    if (m->len == m->cap) {
        uint32_t nc = m->cap ? m->cap * 2 : 4;
        int64_t grow = (int64_t)(nc - m->cap) * (int64_t)sizeof(vm_map_entry);
        if (obj_grow(&m->hdr, grow) < 0) goto oom;
        vm_map_entry *ne = realloc(m->entries, nc * sizeof(vm_map_entry));
        if (!ne) {
            mem_credit(m->hdr.acct, grow);
            goto oom;
        }
        m->entries = ne;
        m->cap = nc;
    }
    if ((m->len + 1) * 2 > m->index_cap) {
        uint32_t nc = m->index_cap ? m->index_cap * 2 : 8;
        while ((m->len + 1) * 2 > nc) nc *= 2;
        if (map_reindex(m, nc) < 0) goto oom;
    }
    m->entries[m->len].key = key;
    m->entries[m->len].val = val;
    m->entries[m->len].hash = h;
    uint32_t p = (uint32_t)h & (m->index_cap - 1);
    while (m->index[p] >= 0) p = (p + 1) & (m->index_cap - 1);
    m->index[p] = (int32_t)m->len;
    m->len++;
    return 0;
oom:
    sgl_error_set(err, "out of memory");
fail:
    vm_release(key);
    vm_release(val);
    return -1;
}

int vm_map_set_cstr(vm_value map, const char *key, vm_value val, sgl_error *err) {
    vm_value k = vm_str_from(key);
    if (k.type != VM_STR) {
        vm_release(val);
        return sgl_error_set(err, "out of memory");
    }
    return vm_map_set(map, k, val, err);
}

vm_value *vm_map_get(vm_value map, vm_value key) {
    uint64_t h;
    if (!vm_hash(key, &h)) return NULL;
    int e = map_find(map.as.m, key, h);
    return e >= 0 ? &map.as.m->entries[e].val : NULL;
}

vm_value *vm_map_get_cstr(vm_value map, const char *key) {
    /* A stack string avoids an allocation for lookups. */
    size_t n = strlen(key);
    struct {
        vm_str s;
        char buf[128];
    } tmp;
    if (n >= sizeof tmp.buf) {
        vm_value k = vm_str_new(key, n);
        if (k.type != VM_STR) return NULL;
        vm_value *r = vm_map_get(map, k);
        vm_release(k);
        return r;
    }
    memset(&tmp.s, 0, sizeof tmp.s);
    tmp.s.hdr.rc = 1;
    tmp.s.hdr.type = VM_STR;
    tmp.s.len = (uint32_t)n;
    memcpy(tmp.s.data, key, n + 1);
    vm_value k = {.type = VM_STR, .as.s = &tmp.s};
    return vm_map_get(map, k);
}

/* ---- equality and ordering ------------------------------------------------------ */

static bool is_num(vm_value v) { return v.type == VM_INT || v.type == VM_FLOAT; }
static double num_f(vm_value v) { return v.type == VM_INT ? (double)v.as.i : v.as.f; }

static int oom(sgl_error *err);

/* Compares a and b one level deep: 0 unequal, 1 equal, 2 two lists (or
 * two maps) of the same length whose items decide. */
static int eq_shallow(vm_value a, vm_value b) {
    if (is_num(a) && is_num(b)) {
        if (a.type == VM_INT && b.type == VM_INT) return a.as.i == b.as.i;
        return num_f(a) == num_f(b);
    }
    if (a.type != b.type) return 0;
    switch (a.type) {
    case VM_NONE: return 1;
    case VM_BOOL: return a.as.b == b.as.b;
    case VM_STR:
        return a.as.s == b.as.s ||
               (a.as.s->len == b.as.s->len && memcmp(a.as.s->data, b.as.s->data, a.as.s->len) == 0);
    case VM_LIST: return a.as.l->len == b.as.l->len ? 2 : 0;
    case VM_MAP: return a.as.m->len == b.as.m->len ? 2 : 0;
    case VM_BUILTIN: return a.as.builtin == b.as.builtin;
    default: return a.as.obj == b.as.obj;
    }
}

typedef struct pair_frame {
    vm_value a, b;
    uint32_t i;
} pair_frame;

int vm_equal_checked(vm_value a, vm_value b, bool *out, sgl_error *err) {
    int r = eq_shallow(a, b);
    if (r != 2) {
        *out = r == 1;
        return 0;
    }
    pair_frame buf[WS_INLINE];
    wstack w;
    ws_init(&w, buf, sizeof(pair_frame));
    pair_frame *f = ws_push(&w);
    *f = (pair_frame){a, b, 0};
    bool eq = true;
    while (w.len && eq) {
        f = ws_top(&w);
        vm_value x, y;
        if (f->a.type == VM_LIST) {
            if (f->i == f->a.as.l->len) {
                w.len--;
                continue;
            }
            x = f->a.as.l->items[f->i];
            y = f->b.as.l->items[f->i];
        } else {
            if (f->i == f->a.as.m->len) {
                w.len--;
                continue;
            }
            vm_value *o = vm_map_get(f->b, f->a.as.m->entries[f->i].key);
            if (!o) {
                eq = false;
                break;
            }
            x = f->a.as.m->entries[f->i].val;
            y = *o;
        }
        f->i++;
        r = eq_shallow(x, y);
        if (r == 0) {
            eq = false;
        } else if (r == 2) {
            pair_frame *n = ws_push(&w);
            if (!n) {
                ws_free(&w);
                return sgl_error_set(err, "out of memory");
            }
            *n = (pair_frame){x, y, 0};
        }
    }
    ws_free(&w);
    *out = eq;
    return 0;
}

bool vm_equal(vm_value a, vm_value b) {
    bool eq = false;
    if (vm_equal_checked(a, b, &eq, NULL) < 0) return false;
    return eq;
}

/* Three-way order of two non-list values; -2 when the pair has no order,
 * -3 when unordered (nan: every comparison false). */
static int order_shallow(vm_value a, vm_value b) {
    if (is_num(a) && is_num(b)) {
        if (a.type == VM_INT && b.type == VM_INT) return (a.as.i > b.as.i) - (a.as.i < b.as.i);
        double x = num_f(a), y = num_f(b);
        if (isnan(x) || isnan(y)) return -3;
        return (x > y) - (x < y);
    }
    if (a.type == VM_STR && b.type == VM_STR) {
        size_t n = SGL_MIN(a.as.s->len, b.as.s->len);
        int c = memcmp(a.as.s->data, b.as.s->data, n);
        if (c) return c < 0 ? -1 : 1;
        return (a.as.s->len > b.as.s->len) - (a.as.s->len < b.as.s->len);
    }
    if (a.type == VM_BOOL && b.type == VM_BOOL) return (a.as.b > b.as.b) - (a.as.b < b.as.b);
    return -2;
}

/* Three-way lexicographic order (lists compare item by item, then by
 * length); -2 no order, -3 unordered, -4 out of memory. */
static int order(vm_value a, vm_value b) {
    if (!(a.type == VM_LIST && b.type == VM_LIST)) return order_shallow(a, b);
    pair_frame buf[WS_INLINE];
    wstack w;
    ws_init(&w, buf, sizeof(pair_frame));
    pair_frame *f = ws_push(&w);
    *f = (pair_frame){a, b, 0};
    int c = 0;
    while (w.len) {
        f = ws_top(&w);
        uint32_t na = f->a.as.l->len, nb = f->b.as.l->len;
        if (f->i == SGL_MIN(na, nb)) {
            c = (na > nb) - (na < nb);
            if (c != 0) break;
            w.len--;
            continue;
        }
        vm_value x = f->a.as.l->items[f->i], y = f->b.as.l->items[f->i];
        f->i++;
        if (x.type == VM_LIST && y.type == VM_LIST) {
            pair_frame *n = ws_push(&w);
            if (!n) {
                c = -4;
                break;
            }
            *n = (pair_frame){x, y, 0};
            continue;
        }
        c = order_shallow(x, y);
        if (c != 0) break;
    }
    ws_free(&w);
    return c;
}

int vm_compare(sgl_op op, vm_value a, vm_value b, bool *out, sgl_error *err) {
    if (op == SGL_OP_EQ || op == SGL_OP_NE) {
        bool e;
        if (vm_equal_checked(a, b, &e, err) < 0) return -1;
        *out = op == SGL_OP_EQ ? e : !e;
        return 0;
    }
    int c = order(a, b);
    if (c == -4) return oom(err);
    if (c == -2)
        return sgl_error_set(err, "'%s' not supported between '%s' and '%s'", sgl_op_name(op),
                             vm_type_name(a.type), vm_type_name(b.type));
    if (c == -3) {
        *out = false;
        return 0;
    }
    switch (op) {
    case SGL_OP_LT: *out = c < 0; break;
    case SGL_OP_LE: *out = c <= 0; break;
    case SGL_OP_GT: *out = c > 0; break;
    case SGL_OP_GE: *out = c >= 0; break;
    default: return sgl_error_set(err, "'%s' is not a comparison", sgl_op_name(op));
    }
    return 0;
}

/* ---- operators -------------------------------------------------------------------- */

static int bad_operands(sgl_op op, vm_value a, vm_value b, sgl_error *err) {
    return sgl_error_set(err, "unsupported operand types for %s: '%s' and '%s'", sgl_op_name(op),
                         vm_type_name(a.type), vm_type_name(b.type));
}

static int oom(sgl_error *err) { return sgl_error_set(err, "out of memory"); }

static int repeat(vm_value seq, int64_t n, vm_value *out, sgl_error *err) {
    if (n < 0) n = 0;
    if (seq.type == VM_STR) {
        size_t len = seq.as.s->len;
        if (len && (uint64_t)n > (UINT32_MAX - 1) / len) return sgl_error_set(err, "string too long");
        sgl_strbuf sb = {0};
        if (sgl_strbuf_reserve(&sb, len * (size_t)n + 1) < 0) return oom(err);
        for (int64_t i = 0; i < n; i++) sgl_strbuf_append(&sb, seq.as.s->data, len);
        *out = vm_str_take(&sb);
        return out->type == VM_STR ? 0 : oom(err);
    }
    uint32_t len = seq.as.l->len;
    if (len && (uint64_t)n > (1u << 28) / len) return sgl_error_set(err, "list too long");
    vm_value l = vm_list_new((uint32_t)(len * n));
    if (l.type != VM_LIST) return oom(err);
    for (int64_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < len; j++) vm_list_push(l, vm_retain(seq.as.l->items[j]));
    *out = l;
    return 0;
}

int vm_arith(sgl_op op, vm_value a, vm_value b, vm_value *out, sgl_error *err) {
    if (is_num(a) && is_num(b)) {
        if (a.type == VM_INT && b.type == VM_INT) {
            int64_t x = a.as.i, y = b.as.i, r;
            bool ovf = false;
            switch (op) {
            case SGL_OP_ADD: ovf = __builtin_add_overflow(x, y, &r); break;
            case SGL_OP_SUB: ovf = __builtin_sub_overflow(x, y, &r); break;
            case SGL_OP_MUL: ovf = __builtin_mul_overflow(x, y, &r); break;
            case SGL_OP_DIV:
            case SGL_OP_MOD:
                if (y == 0) return sgl_error_set(err, "%s by zero", op == SGL_OP_DIV ? "division" : "modulo");
                if (y == -1 && x == INT64_MIN) {
                    if (op == SGL_OP_DIV) ovf = true;
                    r = 0;
                    break;
                }
                r = op == SGL_OP_DIV ? x / y : x % y; /* C: truncation, sign of the dividend */
                break;
            default: return bad_operands(op, a, b, err);
            }
            if (ovf) return sgl_error_set(err, "integer overflow in %s", sgl_op_name(op));
            *out = vm_int(r);
            return 0;
        }
        double x = num_f(a), y = num_f(b), r;
        switch (op) {
        case SGL_OP_ADD: r = x + y; break;
        case SGL_OP_SUB: r = x - y; break;
        case SGL_OP_MUL: r = x * y; break;
        case SGL_OP_DIV:
            if (y == 0) return sgl_error_set(err, "division by zero");
            r = x / y;
            break;
        case SGL_OP_MOD:
            if (y == 0) return sgl_error_set(err, "modulo by zero");
            r = fmod(x, y); /* sign of the dividend, as for ints */
            break;
        default: return bad_operands(op, a, b, err);
        }
        *out = vm_float(r);
        return 0;
    }
    if (op == SGL_OP_ADD && a.type == VM_STR && b.type == VM_STR) {
        sgl_strbuf sb = {0};
        if (sgl_strbuf_reserve(&sb, (size_t)a.as.s->len + b.as.s->len + 1) < 0) return oom(err);
        sgl_strbuf_append(&sb, a.as.s->data, a.as.s->len);
        sgl_strbuf_append(&sb, b.as.s->data, b.as.s->len);
        *out = vm_str_take(&sb);
        return out->type == VM_STR ? 0 : oom(err);
    }
    if (op == SGL_OP_ADD && a.type == VM_LIST && b.type == VM_LIST) {
        vm_value l = vm_list_new(a.as.l->len + b.as.l->len);
        if (l.type != VM_LIST) return oom(err);
        for (uint32_t i = 0; i < a.as.l->len; i++) vm_list_push(l, vm_retain(a.as.l->items[i]));
        for (uint32_t i = 0; i < b.as.l->len; i++) vm_list_push(l, vm_retain(b.as.l->items[i]));
        *out = l;
        return 0;
    }
    if (op == SGL_OP_ADD && a.type == VM_MAP && b.type == VM_MAP) {
        vm_value m = vm_map_new();
        if (m.type != VM_MAP) return oom(err);
        for (int side = 0; side < 2; side++) {
            vm_value src = side ? b : a;
            for (uint32_t i = 0; i < src.as.m->len; i++)
                if (vm_map_set(m, vm_retain(src.as.m->entries[i].key),
                               vm_retain(src.as.m->entries[i].val), err) < 0) {
                    vm_release(m);
                    return -1;
                }
        }
        *out = m;
        return 0;
    }
    if (op == SGL_OP_MUL) {
        if ((a.type == VM_STR || a.type == VM_LIST) && b.type == VM_INT)
            return repeat(a, b.as.i, out, err);
        if ((b.type == VM_STR || b.type == VM_LIST) && a.type == VM_INT)
            return repeat(b, a.as.i, out, err);
    }
    return bad_operands(op, a, b, err);
}

int vm_unary(sgl_op op, vm_value a, vm_value *out, sgl_error *err) {
    if (op == SGL_OP_NOT) {
        *out = vm_bool(!vm_truthy(a));
        return 0;
    }
    if (op == SGL_OP_NEG) {
        if (a.type == VM_INT) {
            if (a.as.i == INT64_MIN) return sgl_error_set(err, "integer overflow in negation");
            *out = vm_int(-a.as.i);
            return 0;
        }
        if (a.type == VM_FLOAT) {
            *out = vm_float(-a.as.f);
            return 0;
        }
        return sgl_error_set(err, "bad operand type for unary -: '%s'", vm_type_name(a.type));
    }
    return sgl_error_set(err, "'%s' is not a unary operator", sgl_op_name(op));
}

int vm_contains(vm_value c, vm_value item, bool *out, sgl_error *err) {
    switch (c.type) {
    case VM_STR:
        if (item.type != VM_STR)
            return sgl_error_set(err, "'in <str>' needs a str on the left, not '%s'",
                                 vm_type_name(item.type));
        if (item.as.s->len == 0) {
            *out = true;
            return 0;
        }
        *out = memmem(c.as.s->data, c.as.s->len, item.as.s->data, item.as.s->len) != NULL;
        return 0;
    case VM_LIST:
        *out = false;
        for (uint32_t i = 0; i < c.as.l->len && !*out; i++)
            if (vm_equal_checked(c.as.l->items[i], item, out, err) < 0) return -1;
        return 0;
    case VM_MAP:
        *out = vm_map_get(c, item) != NULL;
        return 0;
    default:
        return sgl_error_set(err, "argument of type '%s' is not a container", vm_type_name(c.type));
    }
}

static int seq_index(vm_value idx, uint32_t len, const char *what, uint32_t *out, sgl_error *err) {
    if (idx.type != VM_INT)
        return sgl_error_set(err, "%s index must be int, not %s", what, vm_type_name(idx.type));
    int64_t i = idx.as.i;
    if (i < 0) i += len;
    if (i < 0 || i >= (int64_t)len)
        return sgl_error_set(err, "%s index %" PRId64 " out of range (length %u)", what, idx.as.i,
                             len);
    *out = (uint32_t)i;
    return 0;
}

static void key_repr(sgl_strbuf *sb, vm_value k) {
    vm_repr_append(sb, k);
    if (sb->len > 80) {
        sb->len = 77;
        sgl_strbuf_puts(sb, "...");
    }
}

vm_value vm_copy(vm_value v) {
    if (v.type == VM_LIST) {
        vm_value c = vm_list_new(v.as.l->len);
        if (c.type != VM_LIST) return c;
        for (uint32_t i = 0; i < v.as.l->len; i++) c.as.l->items[i] = vm_retain(v.as.l->items[i]);
        c.as.l->len = v.as.l->len;
        return c;
    }
    if (v.type == VM_MAP) {
        vm_value c = vm_map_new();
        for (uint32_t i = 0; c.type == VM_MAP && i < v.as.m->len; i++)
            if (vm_map_set(c, vm_retain(v.as.m->entries[i].key), vm_retain(v.as.m->entries[i].val), NULL) < 0) {
                vm_release(c);
                return vm_none();
            }
        return c;
    }
    return vm_retain(v);
}

/* Makes the list or map in *slot referenced by its container only, copying
 * it (one level) when it is shared. Returns 0 or -1 on OOM. */
static int unshare(vm_value *slot) {
    if ((slot->type != VM_LIST && slot->type != VM_MAP) || slot->as.obj->rc <= 1) return 0;
    vm_value c = vm_copy(*slot);
    if (c.type == VM_NONE) return -1;
    vm_release(*slot);
    *slot = c;
    return 0;
}

int vm_index_get(vm_value obj, vm_value idx, vm_value *out, sgl_error *err) {
    uint32_t i = 0;
    switch (obj.type) {
    case VM_LIST:
        if (seq_index(idx, obj.as.l->len, "list", &i, err) < 0) return -1;
        if (unshare(&obj.as.l->items[i]) < 0) return oom(err);
        *out = vm_retain(obj.as.l->items[i]);
        return 0;
    case VM_STR:
        if (seq_index(idx, obj.as.s->len, "str", &i, err) < 0) return -1;
        *out = vm_str_new(obj.as.s->data + i, 1);
        return out->type == VM_STR ? 0 : oom(err);
    case VM_MAP: {
        vm_value *v = vm_map_get(obj, idx);
        if (!v) {
            uint64_t h;
            if (!vm_hash(idx, &h))
                return sgl_error_set(err, "unhashable map key of type %s", vm_type_name(idx.type));
            sgl_strbuf sb = {0};
            key_repr(&sb, idx);
            sgl_error_set(err, "key %s not found in map", sb.data ? sb.data : "");
            sgl_strbuf_free(&sb);
            return -1;
        }
        if (unshare(v) < 0) return oom(err);
        *out = vm_retain(*v);
        return 0;
    }
    default:
        return sgl_error_set(err, "'%s' value is not indexable", vm_type_name(obj.type));
    }
}

int vm_index_set(vm_value obj, vm_value idx, vm_value v, sgl_error *err) {
    uint32_t i = 0;
    switch (obj.type) {
    case VM_LIST:
        if (seq_index(idx, obj.as.l->len, "list", &i, err) < 0) break;
        return vm_list_set(obj, i, v);
    case VM_MAP:
        return vm_map_set(obj, vm_retain(idx), v, err);
    default:
        sgl_error_set(err, "'%s' value does not support item assignment", vm_type_name(obj.type));
        break;
    }
    vm_release(v);
    return -1;
}

int vm_len(vm_value v, int64_t *out, sgl_error *err) {
    switch (v.type) {
    case VM_STR: *out = v.as.s->len; return 0;
    case VM_LIST: *out = v.as.l->len; return 0;
    case VM_MAP: *out = v.as.m->len; return 0;
    default: return sgl_error_set(err, "'%s' value has no len()", vm_type_name(v.type));
    }
}

typedef struct copy_frame {
    vm_value src, dst; /* borrowed: dst is owned by its parent copy */
    uint32_t i;
} copy_frame;

/* A new empty container of src's kind sized for its items. */
static vm_value copy_shell(vm_value src) {
    return src.type == VM_LIST ? vm_list_new(src.as.l->len) : vm_map_new();
}

vm_value vm_deep_copy(vm_value v) {
    if (v.type != VM_LIST && v.type != VM_MAP) return vm_retain(v);
    vm_value root = copy_shell(v);
    if (root.type == VM_NONE) return root;
    copy_frame buf[WS_INLINE];
    wstack w;
    ws_init(&w, buf, sizeof(copy_frame));
    copy_frame *f = ws_push(&w);
    *f = (copy_frame){v, root, 0};
    bool ok = true;
    while (w.len && ok) {
        f = ws_top(&w);
        vm_value src = f->src, dst = f->dst;
        uint32_t n = src.type == VM_LIST ? src.as.l->len : src.as.m->len;
        if (f->i == n) {
            w.len--;
            continue;
        }
        vm_value item = src.type == VM_LIST ? src.as.l->items[f->i] : src.as.m->entries[f->i].val;
        uint32_t i = f->i++;
        vm_value c;
        bool nested = item.type == VM_LIST || item.type == VM_MAP;
        if (nested) {
            c = copy_shell(item);
            if (c.type == VM_NONE) {
                ok = false;
                break;
            }
        } else {
            c = vm_retain(item);
        }
        int rc = src.type == VM_LIST ? vm_list_push(dst, c)
                                     : vm_map_set(dst, vm_retain(src.as.m->entries[i].key), c, NULL);
        if (rc < 0) {
            ok = false;
            break;
        }
        if (nested) {
            copy_frame *nf = ws_push(&w);
            if (!nf) {
                ok = false;
                break;
            }
            *nf = (copy_frame){item, c, 0};
        }
    }
    ws_free(&w);
    if (!ok) {
        vm_release(root);
        return vm_none();
    }
    return root;
}

/* ---- printing ------------------------------------------------------------------------ */

static int float_append(sgl_strbuf *sb, double f, bool json) {
    if (isnan(f)) return sgl_strbuf_puts(sb, json ? "null" : "nan");
    if (isinf(f)) return sgl_strbuf_puts(sb, json ? "null" : (f < 0 ? "-inf" : "inf"));
    /* Shortest digits that read back exactly; positional notation for
     * decimal exponents in [-4, 16) as Python's repr does. */
    char buf[64];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, f);
        if (strtod(buf, NULL) == f) break;
    }
    if (f != 0) {
        int e = (int)floor(log10(fabs(f)));
        if (e >= -4 && e < 16) {
            int decimals = prec - 1 - e;
            snprintf(buf, sizeof buf, "%.*f", decimals > 0 ? decimals : 0, f);
            if (strtod(buf, NULL) != f) snprintf(buf, sizeof buf, "%.*g", prec, f);
        }
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    return sgl_strbuf_puts(sb, buf);
}

static int quote_append(sgl_strbuf *sb, const char *s, size_t n) {
    int rc = sgl_strbuf_putc(sb, '"');
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': rc = sgl_strbuf_puts(sb, "\\\""); break;
        case '\\': rc = sgl_strbuf_puts(sb, "\\\\"); break;
        case '\n': rc = sgl_strbuf_puts(sb, "\\n"); break;
        case '\r': rc = sgl_strbuf_puts(sb, "\\r"); break;
        case '\t': rc = sgl_strbuf_puts(sb, "\\t"); break;
        case '\b': rc = sgl_strbuf_puts(sb, "\\b"); break;
        case '\f': rc = sgl_strbuf_puts(sb, "\\f"); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                rc = sgl_strbuf_printf(sb, "\\u%04x", c);
            } else if (c < 0x80) {
                rc = sgl_strbuf_putc(sb, (char)c);
            } else {
                /* JSON text is UTF-8: valid sequences are kept, each maximal
                 * invalid part (e.g. a character cut by max_tokens) becomes
                 * U+FFFD. Invalid parts never hold ASCII, so the run of
                 * non-ASCII bytes here is repaired on its own. */
                size_t j = i;
                while (j < n && (unsigned char)s[j] >= 0x80) j++;
                rc = sgl_strbuf_reserve(sb, (j - i) * 3);
                if (rc == 0) {
                    sb->len += uni_utf8_repair(s + i, j - i, sb->data + sb->len, 0, NULL);
                    sb->data[sb->len] = 0;
                }
                i = j - 1;
            }
        }
    }
    return rc ? rc : sgl_strbuf_putc(sb, '"');
}

static int dump(sgl_strbuf *sb, vm_value v, bool compact, sgl_error *err);

/* str(): strings raw, none/bool/numbers as written in SGL, lists and maps as
 * JSON (", " / ": " separators); repr() quotes strings. */
static int show(sgl_strbuf *sb, vm_value v, bool repr) {
    switch (v.type) {
    case VM_NONE: return sgl_strbuf_puts(sb, "null");
    case VM_BOOL: return sgl_strbuf_puts(sb, v.as.b ? "true" : "false");
    case VM_INT: return sgl_strbuf_printf(sb, "%" PRId64, v.as.i);
    case VM_FLOAT: return float_append(sb, v.as.f, false);
    case VM_STR:
        return repr ? quote_append(sb, v.as.s->data, v.as.s->len)
                    : sgl_strbuf_append(sb, v.as.s->data, v.as.s->len);
    case VM_LIST:
    case VM_MAP: {
        size_t mark = sb->len;
        if (dump(sb, v, false, NULL) == 0) return 0;
        sb->len = mark;
        if (sb->data) sb->data[mark] = 0;
        return sgl_strbuf_puts(sb, v.type == VM_LIST ? "[...]" : "{...}");
    }
    case VM_FN: return sgl_strbuf_printf(sb, "<fn %s>", v.as.fn->name);
    case VM_BUILTIN: return sgl_strbuf_printf(sb, "<builtin %s>", sgl_builtin_name(v.as.builtin));
    case VM_STREAM: return vm_stream_show(sb, v.as.st);
    case VM_ITER: return sgl_strbuf_puts(sb, "<iterator>");
    default: return sgl_strbuf_puts(sb, "?");
    }
}

int vm_str_append(sgl_strbuf *sb, vm_value v) { return show(sb, v, false); }
int vm_repr_append(sgl_strbuf *sb, vm_value v) { return show(sb, v, true); }

vm_value vm_to_str(vm_value v) {
    if (v.type == VM_STR) return vm_retain(v);
    sgl_strbuf sb = {0};
    if (vm_str_append(&sb, v) < 0) {
        sgl_strbuf_free(&sb);
        return vm_none();
    }
    return vm_str_take(&sb);
}

/* ---- JSON ------------------------------------------------------------------------------- */

/* Writes one map key (a string, or another key's str()) JSON-quoted. */
static int key_append(sgl_strbuf *sb, vm_value key) {
    if (key.type == VM_STR) return quote_append(sb, key.as.s->data, key.as.s->len);
    sgl_strbuf k = {0};
    int rc = show(&k, key, false);
    if (rc == 0) rc = quote_append(sb, k.data ? k.data : "", k.len);
    sgl_strbuf_free(&k);
    return rc;
}

typedef struct dump_frame {
    vm_value v; /* a list or map (borrowed) */
    uint32_t i;
} dump_frame;

/* JSON writer over an explicit stack: a list or map opens a frame, and its
 * closing bracket is written when the frame's items run out. A stream is
 * written as the map of its variables. */
static int dump(sgl_strbuf *sb, vm_value v, bool compact, sgl_error *err) {
    dump_frame buf[WS_INLINE];
    wstack w;
    ws_init(&w, buf, sizeof(dump_frame));
    int rc = 0;
    bool have = true; /* v is a value still to write */
    while (rc == 0 && (have || w.len)) {
        if (!have) {
            dump_frame *f = ws_top(&w);
            uint32_t n = f->v.type == VM_LIST ? f->v.as.l->len : f->v.as.m->len;
            if (f->i == n) {
                rc = sgl_strbuf_putc(sb, f->v.type == VM_LIST ? ']' : '}');
                w.len--;
                continue;
            }
            if (f->i) rc = sgl_strbuf_puts(sb, compact ? "," : ", ");
            if (f->v.type == VM_LIST) {
                v = f->v.as.l->items[f->i];
            } else {
                vm_map_entry *e = &f->v.as.m->entries[f->i];
                if (rc == 0) rc = key_append(sb, e->key);
                if (rc == 0) rc = sgl_strbuf_puts(sb, compact ? ":" : ": ");
                v = e->val;
            }
            f->i++;
            if (rc) break;
        }
        have = false;
        if (v.type == VM_STREAM) v = vm_stream_vars(v.as.st);
        switch (v.type) {
        case VM_NONE: rc = sgl_strbuf_puts(sb, "null"); break;
        case VM_BOOL: rc = sgl_strbuf_puts(sb, v.as.b ? "true" : "false"); break;
        case VM_INT: rc = sgl_strbuf_printf(sb, "%" PRId64, v.as.i); break;
        case VM_FLOAT: rc = float_append(sb, v.as.f, true); break;
        case VM_STR: rc = quote_append(sb, v.as.s->data, v.as.s->len); break;
        case VM_LIST:
        case VM_MAP: {
            dump_frame *f = ws_push(&w);
            if (!f) {
                rc = -1;
                break;
            }
            *f = (dump_frame){v, 0};
            rc = sgl_strbuf_putc(sb, v.type == VM_LIST ? '[' : '{');
            break;
        }
        default:
            ws_free(&w);
            return sgl_error_set(err, "a %s value has no JSON form", vm_type_name(v.type));
        }
    }
    ws_free(&w);
    return rc ? oom(err) : 0;
}

int vm_json_dump(sgl_strbuf *sb, vm_value v, bool compact, sgl_error *err) {
    return dump(sb, v, compact, err);
}

typedef struct json_parser {
    const char *s, *end, *p;
    sgl_error *err;
    int depth;
} json_parser;

static int json_fail(json_parser *jp, const char *msg) {
    int line = 1, col = 1;
    for (const char *q = jp->s; q < jp->p; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return sgl_error_set(jp->err, "json: line %d col %d: %s", line, col, msg);
}

static void json_ws(json_parser *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int json_hex4(json_parser *jp, uint32_t *out) {
    if (jp->end - jp->p < 4) return json_fail(jp, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = jp->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return json_fail(jp, "bad hex digit in \\u escape");
    }
    jp->p += 4;
    *out = v;
    return 0;
}

static void utf8_put(sgl_strbuf *sb, uint32_t cp) {
    char b[4];
    int n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xc0 | (cp >> 6)); b[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12)); b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18)); b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); b[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
    }
    sgl_strbuf_append(sb, b, (size_t)n);
}

static int json_string(json_parser *jp, vm_value *out) {
    jp->p++; /* opening quote */
    sgl_strbuf sb = {0};
    sgl_strbuf_reserve(&sb, 16);
    while (1) {
        if (jp->p >= jp->end) {
            sgl_strbuf_free(&sb);
            return json_fail(jp, "unterminated string");
        }
        char c = *jp->p++;
        if (c == '"') break;
        if ((unsigned char)c < 0x20) {
            jp->p--;
            sgl_strbuf_free(&sb);
            return json_fail(jp, "control character in string");
        }
        if (c != '\\') {
            sgl_strbuf_putc(&sb, c);
            continue;
        }
        if (jp->p >= jp->end) break;
        char e = *jp->p++;
        switch (e) {
        case '"': sgl_strbuf_putc(&sb, '"'); break;
        case '\\': sgl_strbuf_putc(&sb, '\\'); break;
        case '/': sgl_strbuf_putc(&sb, '/'); break;
        case 'b': sgl_strbuf_putc(&sb, '\b'); break;
        case 'f': sgl_strbuf_putc(&sb, '\f'); break;
        case 'n': sgl_strbuf_putc(&sb, '\n'); break;
        case 'r': sgl_strbuf_putc(&sb, '\r'); break;
        case 't': sgl_strbuf_putc(&sb, '\t'); break;
        case 'u': {
            uint32_t cp;
            if (json_hex4(jp, &cp) < 0) {
                sgl_strbuf_free(&sb);
                return -1;
            }
            if (cp >= 0xd800 && cp < 0xdc00 && jp->end - jp->p >= 6 && jp->p[0] == '\\' &&
                jp->p[1] == 'u') {
                jp->p += 2;
                uint32_t lo;
                if (json_hex4(jp, &lo) < 0) {
                    sgl_strbuf_free(&sb);
                    return -1;
                }
                if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else cp = 0xfffd;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd;
            }
            utf8_put(&sb, cp);
            break;
        }
        default:
            jp->p--;
            sgl_strbuf_free(&sb);
            return json_fail(jp, "bad escape in string");
        }
    }
    *out = vm_str_take(&sb);
    return out->type == VM_STR ? 0 : json_fail(jp, "out of memory");
}

static int json_value(json_parser *jp, vm_value *out);

static int json_number(json_parser *jp, vm_value *out) {
    const char *start = jp->p;
    bool is_float = false;
    if (jp->p < jp->end && *jp->p == '-') jp->p++;
    if (jp->p >= jp->end || *jp->p < '0' || *jp->p > '9') return json_fail(jp, "bad number");
    if (*jp->p == '0') jp->p++;
    else while (jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9') jp->p++;
    if (jp->p < jp->end && *jp->p == '.') {
        is_float = true;
        jp->p++;
        if (jp->p >= jp->end || *jp->p < '0' || *jp->p > '9') return json_fail(jp, "bad number");
        while (jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9') jp->p++;
    }
    if (jp->p < jp->end && (*jp->p == 'e' || *jp->p == 'E')) {
        is_float = true;
        jp->p++;
        if (jp->p < jp->end && (*jp->p == '+' || *jp->p == '-')) jp->p++;
        if (jp->p >= jp->end || *jp->p < '0' || *jp->p > '9') return json_fail(jp, "bad number");
        while (jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9') jp->p++;
    }
    char buf[64];
    size_t n = (size_t)(jp->p - start);
    char *tmp = n < sizeof buf ? buf : malloc(n + 1);
    if (!tmp) return json_fail(jp, "out of memory");
    memcpy(tmp, start, n);
    tmp[n] = 0;
    if (!is_float) {
        errno = 0;
        long long v = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) is_float = true;
        else *out = vm_int(v);
    }
    if (is_float) *out = vm_float(strtod(tmp, NULL));
    if (tmp != buf) free(tmp);
    return 0;
}

static int json_lit(json_parser *jp, const char *word, vm_value v, vm_value *out) {
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return json_fail(jp, "unexpected character");
    jp->p += n;
    *out = v;
    return 0;
}

static int json_value(json_parser *jp, vm_value *out) {
    json_ws(jp);
    if (jp->p >= jp->end) return json_fail(jp, "unexpected end of input");
    if (++jp->depth > VM_JSON_MAX_DEPTH) {
        jp->depth--;
        return json_fail(jp, "nested too deeply (the limit is " XSTR(VM_JSON_MAX_DEPTH) " levels)");
    }
    int rc;
    char c = *jp->p;
    if (c == '{') {
        jp->p++;
        vm_value m = vm_map_new();
        if (m.type != VM_MAP) return json_fail(jp, "out of memory");
        json_ws(jp);
        if (jp->p < jp->end && *jp->p == '}') {
            jp->p++;
        } else {
            while (1) {
                json_ws(jp);
                if (jp->p >= jp->end || *jp->p != '"') {
                    vm_release(m);
                    return json_fail(jp, "expected a string key");
                }
                vm_value k, v;
                if (json_string(jp, &k) < 0) {
                    vm_release(m);
                    return -1;
                }
                json_ws(jp);
                if (jp->p >= jp->end || *jp->p != ':') {
                    vm_release(k);
                    vm_release(m);
                    return json_fail(jp, "expected ':'");
                }
                jp->p++;
                if (json_value(jp, &v) < 0) {
                    vm_release(k);
                    vm_release(m);
                    return -1;
                }
                if (vm_map_set(m, k, v, jp->err) < 0) {
                    vm_release(m);
                    return -1;
                }
                json_ws(jp);
                if (jp->p < jp->end && *jp->p == ',') {
                    jp->p++;
                    continue;
                }
                if (jp->p < jp->end && *jp->p == '}') {
                    jp->p++;
                    break;
                }
                vm_release(m);
                return json_fail(jp, "expected ',' or '}'");
            }
        }
        *out = m;
        rc = 0;
    } else if (c == '[') {
        jp->p++;
        vm_value l = vm_list_new(0);
        if (l.type != VM_LIST) return json_fail(jp, "out of memory");
        json_ws(jp);
        if (jp->p < jp->end && *jp->p == ']') {
            jp->p++;
        } else {
            while (1) {
                vm_value v;
                if (json_value(jp, &v) < 0) {
                    vm_release(l);
                    return -1;
                }
                if (vm_list_push(l, v) < 0) {
                    vm_release(l);
                    return json_fail(jp, "out of memory");
                }
                json_ws(jp);
                if (jp->p < jp->end && *jp->p == ',') {
                    jp->p++;
                    continue;
                }
                if (jp->p < jp->end && *jp->p == ']') {
                    jp->p++;
                    break;
                }
                vm_release(l);
                return json_fail(jp, "expected ',' or ']'");
            }
        }
        *out = l;
        rc = 0;
    } else if (c == '"') {
        rc = json_string(jp, out);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        rc = json_number(jp, out);
    } else if (c == 't') {
        rc = json_lit(jp, "true", vm_bool(true), out);
    } else if (c == 'f') {
        rc = json_lit(jp, "false", vm_bool(false), out);
    } else if (c == 'n') {
        rc = json_lit(jp, "null", vm_none(), out);
    } else {
        rc = json_fail(jp, "unexpected character");
    }
    jp->depth--;
    return rc;
}

int vm_json_parse(const char *text, size_t len, vm_value *out, sgl_error *err) {
    json_parser jp = {.s = text, .end = text + len, .p = text, .err = err};
    if (json_value(&jp, out) < 0) return -1;
    json_ws(&jp);
    if (jp.p != jp.end) {
        vm_release(*out);
        *out = vm_none();
        return json_fail(&jp, "trailing characters after the value");
    }
    return 0;
}

/* ---- quoting for messages ---------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t k = 1; k < len; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
    if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
    if (c == 0xF0 && s[1] < 0x90) return 0;
    if (c == 0xF4 && s[1] >= 0x90) return 0;
    return len;
}

int vm_escape(sgl_strbuf *sb, const char *s, size_t n, size_t max, bool quoted) {
    const unsigned char *u = (const unsigned char *)s;
    int rc = quoted ? sgl_strbuf_putc(sb, '"') : 0;
    size_t i = 0;
    while (i < n && i < max) {
        unsigned char c = u[i];
        if ((c == '"' && quoted) || c == '\\') rc |= sgl_strbuf_printf(sb, "\\%c", c);
        else if (c == '\n') rc |= sgl_strbuf_puts(sb, "\\n");
        else if (c == '\t') rc |= sgl_strbuf_puts(sb, "\\t");
        else if (c == '\r') rc |= sgl_strbuf_puts(sb, "\\r");
        else if (c < 0x20 || c == 0x7F) rc |= sgl_strbuf_printf(sb, "\\x%02x", c);
        else if (c >= 0x80) {
            size_t l = utf8_seq(u + i, n - i);
            if (!l) {
                rc |= sgl_strbuf_printf(sb, "\\x%02x", c);
            } else {
                rc |= sgl_strbuf_append(sb, s + i, l);
                i += l;
                continue;
            }
        } else {
            rc |= sgl_strbuf_putc(sb, (char)c);
        }
        i++;
    }
    if (quoted) rc |= sgl_strbuf_putc(sb, '"');
    if (i < n) rc |= sgl_strbuf_puts(sb, "...");
    return rc < 0 ? -1 : 0;
}

int vm_quote(sgl_strbuf *sb, const char *s, size_t n, size_t max) {
    return vm_escape(sb, s, n, max, true);
}

const char *vm_quote_buf(char *buf, size_t cap, const char *s, size_t n, size_t max) {
    sgl_strbuf sb = {0};
    /* each byte may take 4 escaped: keep the result within cap */
    if (cap > 8 && max > (cap - 8) / 4) max = (cap - 8) / 4;
    vm_quote(&sb, s ? s : "", s ? n : 0, max);
    snprintf(buf, cap, "%s", sb.data ? sb.data : "\"\"");
    sgl_strbuf_free(&sb);
    return buf;
}
