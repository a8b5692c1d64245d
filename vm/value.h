/* value: SGVM's runtime values. Scalars (none, bool, int, float, builtin)
 * live inside vm_value; strings, lists, maps, functions and streams are
 * reference-counted heap objects pointed to from it.
 *
 * Ownership (the one rule set every VM file follows):
 *   - A vm_value held in a variable, stack slot or container owns one
 *     reference to its object (scalars own nothing).
 *   - Constructors (vm_str_new, vm_list_new, vm_json_parse, vm_arith, ...)
 *     hand the caller a NEW reference: the caller must vm_release it or
 *     store it somewhere that will.
 *   - Storing functions (vm_list_push, vm_list_set, vm_map_set) CONSUME the
 *     values passed in (key and value): the container now owns them. On
 *     failure they release what they were given, so the caller never
 *     releases a value it passed to a storing function.
 *   - Getters (vm_list_get, vm_map_get, vm_str_cstr) return BORROWED
 *     values/pointers, valid while the container keeps them; vm_retain one
 *     to keep it.
 *   - Everything else (equality, hashing, printing, JSON dump) borrows.
 * Lists and maps have value semantics in programs, kept copy-on-write: the
 * VM stores a one-level copy (vm_copy) of a container that is referenced
 * elsewhere, so the containers it holds may be shared; vm_index_get
 * replaces a shared list or map item by its own one-level copy before
 * handing it out, so an item assignment through the result (a[0][1] = x)
 * changes only this container. Every container reached from a variable
 * through indexing is thus referenced once, and values form no cycles. Every walk over
 * nested values (release, equality, ordering, printing, JSON writing, deep
 * copy) uses an explicit work stack on the heap, never C recursion: values
 * of any depth are handled, at a cost proportional to their size. Only the
 * JSON reader has a nesting limit (VM_JSON_MAX_DEPTH).
 *
 * Maps keep insertion order and accept hashable keys (none, bool, int,
 * float, str; 1 and 1.0 are the same key). JSON-shaped: json_dump writes
 * non-string keys as their str().
 */
#ifndef SGL_VM_VALUE_H
#define SGL_VM_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lang/ast.h"
#include "util/util.h"

/* Deepest nesting vm_json_parse accepts (an error beyond it). */
#define VM_JSON_MAX_DEPTH 512

typedef enum vm_type {
    VM_NONE,
    VM_BOOL,
    VM_INT,
    VM_FLOAT,
    VM_STR,
    VM_LIST,
    VM_MAP,
    VM_FN,      /* an SGL function (heap object: name + code pointer) */
    VM_BUILTIN, /* a builtin (immediate: sgl_builtin id) */
    VM_STREAM,  /* a prompt stream (vm/stream.h) */
    VM_ITER,    /* a for-loop iterator (internal: never visible to programs) */
    VM__TYPE_COUNT
} vm_type;

/* Header of every heap object. rc counts owning references; acct is the
 * memory account (vm_mem_open) its bytes are charged to, 0 = none. */
typedef struct vm_obj {
    uint32_t rc;
    uint16_t type; /* vm_type */
    uint16_t acct;
} vm_obj;

typedef struct vm_str vm_str;
typedef struct vm_list vm_list;
typedef struct vm_map vm_map;
typedef struct vm_fn vm_fn;
typedef struct vm_stream vm_stream;
typedef struct vm_iter vm_iter;

typedef struct vm_value {
    vm_type type;
    union {
        bool b;
        int64_t i;
        double f;
        int32_t builtin;
        vm_obj *obj;
        vm_str *s;
        vm_list *l;
        vm_map *m;
        vm_fn *fn;
        vm_stream *st;
        vm_iter *it;
    } as;
} vm_value;

/* Immutable byte string (NUL-terminated; may hold NULs). */
struct vm_str {
    vm_obj hdr;
    uint32_t len;
    uint32_t cap;  /* bytes data can hold before the NUL (>= len) */
    uint64_t hash; /* 0 = not computed yet */
    char data[];
};

struct vm_list {
    vm_obj hdr;
    vm_value *items; /* [len], owned */
    uint32_t len, cap;
};

typedef struct vm_map_entry {
    vm_value key, val; /* owned */
    uint64_t hash;
} vm_map_entry;

struct vm_map {
    vm_obj hdr;
    vm_map_entry *entries; /* [len], insertion order */
    uint32_t len, cap;
    int32_t *index;        /* [index_cap] open addressing, -1 = empty; power of two */
    uint32_t index_cap;
};

/* A function value. code is the compiler's function record (opaque here,
 * owned by the loaded program, which outlives every value). */
struct vm_fn {
    vm_obj hdr;
    const void *code;
    uint32_t index; /* index in the program's function table */
    char *name;     /* owned copy */
};

/* Allocates a zeroed heap object of size bytes with rc 1 (counted in
 * vm_live_objects). Returns NULL on OOM. For object kinds defined in other
 * files (streams). */
void *vm_obj_alloc(size_t size, vm_type t);

/* Iterator over a list (items), map (keys, insertion order) or str (UTF-8
 * characters). */
struct vm_iter {
    vm_obj hdr;
    vm_value src; /* owned */
    uint32_t pos;
};

/* ---- constructors (immediates need no release) ---------------------------- */

static inline vm_value vm_none(void) { vm_value v = {.type = VM_NONE}; return v; }
static inline vm_value vm_bool(bool b) { vm_value v = {.type = VM_BOOL, .as.b = b}; return v; }
static inline vm_value vm_int(int64_t i) { vm_value v = {.type = VM_INT, .as.i = i}; return v; }
static inline vm_value vm_float(double f) { vm_value v = {.type = VM_FLOAT, .as.f = f}; return v; }
static inline vm_value vm_builtin(int32_t id) {
    vm_value v = {.type = VM_BUILTIN, .as.builtin = id};
    return v;
}
static inline bool vm_is_obj(vm_value v) {
    return v.type >= VM_STR && v.type != VM_BUILTIN && v.type < VM__TYPE_COUNT;
}

/* New string copied from s[0..n). Returns a new reference; type VM_NONE if
 * memory runs out (callers check with vm_is_oom / type). */
vm_value vm_str_new(const char *s, size_t n);
vm_value vm_str_from(const char *cstr);
/* Appends b's bytes to the string *sv in place, growing it (the object may
 * move: *sv is updated, and the caller must update every other reference
 * it knows of). Only for a string nobody else can observe changing.
 * Returns 0 or -1 on OOM. */
int vm_str_append_inplace(vm_value *sv, const char *b, size_t n);
/* Takes a strbuf's contents as a string (the buffer is emptied). */
vm_value vm_str_take(sgl_strbuf *sb);
vm_value vm_list_new(uint32_t cap);
vm_value vm_map_new(void);
/* name is copied. */
vm_value vm_fn_new(const void *code, uint32_t index, const char *name);
/* Iterator over src (retained). Returns 0, or -1 with err when src is not
 * iterable. */
int vm_iter_new(vm_value src, vm_value *out, sgl_error *err);
/* Sets *item (new reference) and returns true, or returns false at the end. */
bool vm_iter_next(vm_value it, vm_value *item);

/* ---- reference counting ------------------------------------------------------ */

/* Adds a reference; returns v for chaining. Scalars: no-op. */
static inline vm_value vm_retain(vm_value v) {
    if (vm_is_obj(v)) v.as.obj->rc++;
    return v;
}
/* Drops a reference; frees the object (and releases its contents) at zero. */
void vm_release(vm_value v);
/* Releases v and sets it to none. */
static inline void vm_clear(vm_value *v) {
    vm_release(*v);
    *v = vm_none();
}

/* ---- accessors ---------------------------------------------------------------- */

/* "none", "bool", "int", "float", "str", "list", "map", "fn", "builtin", "stream", "iterator". */
const char *vm_type_name(vm_type t);
/* Borrowed NUL-terminated bytes of a VM_STR. */
static inline const char *vm_str_cstr(vm_value v) { return v.as.s->data; }
static inline size_t vm_str_len(vm_value v) { return v.as.s->len; }
bool vm_truthy(vm_value v);

/* List ops. push/set CONSUME v; get borrows. Return 0 / -1 (OOM or index). */
int vm_list_push(vm_value list, vm_value v);
vm_value vm_list_get(vm_value list, uint32_t i);
int vm_list_set(vm_value list, uint32_t i, vm_value v);
static inline uint32_t vm_list_len(vm_value list) { return list.as.l->len; }

/* Map ops. set CONSUMES key and val (replacing an existing entry keeps its
 * position). Returns 0, or -1 with err set (unhashable key, OOM). */
int vm_map_set(vm_value map, vm_value key, vm_value val, sgl_error *err);
/* Convenience: key given as a C string. Consumes val. */
int vm_map_set_cstr(vm_value map, const char *key, vm_value val, sgl_error *err);
/* Borrowed pointer to the value stored under key, or NULL if absent (or the
 * key is unhashable). */
vm_value *vm_map_get(vm_value map, vm_value key);
vm_value *vm_map_get_cstr(vm_value map, const char *key);
static inline uint32_t vm_map_len(vm_value map) { return map.as.m->len; }

/* ---- equality, hashing, ordering -------------------------------------------- */

/* Deep equality; int 1 == float 1.0. Streams/functions compare by identity.
 * Any depth. vm_equal answers false if memory runs out on a deep value;
 * vm_equal_checked returns -1 with err set instead (else 0, *out set). */
bool vm_equal(vm_value a, vm_value b);
int vm_equal_checked(vm_value a, vm_value b, bool *out, sgl_error *err);
/* Returns true and sets *h for hashable values (none, bool, int, float, str,
 * builtin, fn); false for lists, maps, streams. Equal values hash equal. */
bool vm_hash(vm_value v, uint64_t *h);

/* ---- operators (lang/ops.def) ------------------------------------------------ */

/* Binary arithmetic ADD SUB MUL DIV MOD (docs/language.md §6): int op int
 * stays int (DIV truncates toward zero, MOD has the dividend's sign, as C);
 * a float operand gives a float; str + str, list + list, map + map (right
 * wins), str * int, list * int. Sets *out to a new reference and returns 0,
 * or -1 with err set ("unsupported operand types for +: 'str' and 'int'",
 * "division by zero", "integer overflow in *"). */
int vm_arith(sgl_op op, vm_value a, vm_value b, vm_value *out, sgl_error *err);
/* EQ NE LT LE GT GE: ordering works on numbers, strings (bytewise) and lists
 * (lexicographic); other mixes give an error. */
int vm_compare(sgl_op op, vm_value a, vm_value b, bool *out, sgl_error *err);
/* `item in container`: substring for str, element for list, key for map. */
int vm_contains(vm_value container, vm_value item, bool *out, sgl_error *err);
/* NEG (numbers) and NOT (any value). */
int vm_unary(sgl_op op, vm_value a, vm_value *out, sgl_error *err);
/* obj[idx] for str (one byte), list (negative counts from the end) and map
 * (missing key is an error). Sets *out to a new reference. A list or map
 * item shared with other containers is first replaced in obj by a copy of
 * its own (copy-on-write: obj's value is unchanged). */
int vm_index_get(vm_value obj, vm_value idx, vm_value *out, sgl_error *err);
/* obj[idx] = v for list and map. CONSUMES v. */
int vm_index_set(vm_value obj, vm_value idx, vm_value v, sgl_error *err);
/* A new list or map holding v's items (retained): a one-level copy. Other
 * values are retained. Returns a new reference, or none on OOM. */
vm_value vm_copy(vm_value v);
/* A copy of v sharing no list or map with it (strings and other objects
 * are shared: they are immutable or compared by identity). Any depth.
 * Returns a new reference, or none on OOM. */
vm_value vm_deep_copy(vm_value v);
/* len(): bytes of a str, items of a list or map. */
int vm_len(vm_value v, int64_t *out, sgl_error *err);

/* ---- printing and JSON -------------------------------------------------------- */

/* Appends str(v) to sb (docs/language.md §9): a string's own bytes, other
 * values as JSON (none is null; lists and maps with ", " and ": "
 * separators); nan/inf as nan/inf; streams as "<stream ...>". repr(v) differs only in
 * quoting a top-level string JSON-style. Floats print in the shortest form
 * that reads back exactly, with ".0" when integral. Returns 0 or -1 (OOM). */
int vm_str_append(sgl_strbuf *sb, vm_value v);
int vm_repr_append(sgl_strbuf *sb, vm_value v);
/* str(v) as a new string value (reference), or none on OOM. */
vm_value vm_to_str(vm_value v);

/* Appends s[0..n) to sb as a double-quoted text for messages: \" \\ \n \t
 * \r escaped, other control bytes and invalid UTF-8 as \xNN; cut after about
 * max bytes of s (at a character boundary) with "..." after the closing
 * quote. Returns 0 or -1 on OOM. */
int vm_quote(sgl_strbuf *sb, const char *s, size_t n, size_t max);
/* vm_quote with the surrounding quotes left out when !quoted (then a " is
 * not escaped): for message texts that are not values. */
int vm_escape(sgl_strbuf *sb, const char *s, size_t n, size_t max, bool quoted);
/* vm_quote into buf[cap] (cut further to fit; always NUL-terminated); returns
 * buf. For error messages: sgl_error_set(err, "... %s", vm_quote_buf(q,
 * sizeof q, s, n, 60)). */
#define VM_QUOTE_CAP 256
const char *vm_quote_buf(char *buf, size_t cap, const char *s, size_t n, size_t max);

/* Writes v as JSON: compact = no spaces, else ", " and ": " separators (one
 * line either way). Streams dump as the map of their variables; functions
 * and builtins are an error; nan/inf become null. Returns 0 or -1 with err. */
int vm_json_dump(sgl_strbuf *sb, vm_value v, bool compact, sgl_error *err);
/* Parses a JSON text (integers without fraction/exponent become int, others
 * float; objects become maps in document order). Sets *out to a new
 * reference; returns 0, or -1 with err "json: line L col C: ...". */
int vm_json_parse(const char *text, size_t len, vm_value *out, sgl_error *err);

/* Count of live heap objects (for leak checks in tests). */
int64_t vm_live_objects(void);

/* ---- memory accounting ------------------------------------------------------------
 * The bytes of strings, lists, maps, functions and iterators (object and
 * buffers) are charged to the account current when the object was made and
 * credited back to that same account when it is freed, however long it
 * lives. Accounts nest (an instance's account inside its run's): a charge
 * must fit every limit up the chain, else the allocation fails as out of
 * memory and vm_mem_refused() reports which limit was hit. Streams' text
 * is not counted. Accounts are per thread (values never cross threads). */

/* Opens an account with a byte limit (0: none) inside parent (0: top).
 * Returns its id, or 0 when no id is free (then nothing is charged). */
uint32_t vm_mem_open(uint32_t parent, int64_t limit);
/* The account takes no more charges; its id is reused once every byte
 * charged to it has been freed. */
void vm_mem_close(uint32_t id);
/* Makes id the account new objects are charged to; returns the previous. */
uint32_t vm_mem_enter(uint32_t id);
/* Bytes currently charged to id (0 for id 0). */
int64_t vm_mem_used(uint32_t id);
/* The limit (bytes) of the last charge refused since the previous call, or
 * 0 if none was; clears it. */
int64_t vm_mem_refused(void);
/* Non-zero while a refused charge has not been collected by
 * vm_mem_refused (cheap to test on every instruction). */
extern _Thread_local int64_t vm_mem_refused_at;

#endif
