/* fuzz_value: libFuzzer target over SGL values: the input is a little
 * program that builds a value (push scalars and strings, wrap the stack top
 * in lists and maps, nest to any depth, share sub-values) and then
 * exercises the printer (str, repr, JSON), the JSON reader on the
 * printer's output, equality and ordering against a deep copy, copy-on-
 * write indexing and release. Checked: a value equals its deep copy and
 * orders equal to it; a JSON-printable value without nan/inf, not deeper
 * than the reader's limit, reads back equal; nothing leaks. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm/value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_STACK = 64 };

/* Whether v has a nan/inf float or nests deeper than max (explicit stack). */
static bool awkward(vm_value v, int max) {
    struct fr { vm_value v; uint32_t i; int d; } st[4096];
    int n = 0;
    if (v.type == VM_FLOAT) return !isfinite(v.as.f);
    if (v.type != VM_LIST && v.type != VM_MAP) return false;
    st[n++] = (struct fr){v, 0, 1};
    while (n) {
        struct fr *f = &st[n - 1];
        uint32_t len = f->v.type == VM_LIST ? f->v.as.l->len : f->v.as.m->len;
        if (f->d > max || n >= 4096) return true;
        if (f->i == len) {
            n--;
            continue;
        }
        vm_value c = f->v.type == VM_LIST ? f->v.as.l->items[f->i] : f->v.as.m->entries[f->i].val;
        f->i++;
        if (c.type == VM_FLOAT && !isfinite(c.as.f)) return true;
        if (f->v.type == VM_MAP && f->v.as.m->entries[f->i - 1].key.type != VM_STR) return true;
        if (c.type == VM_LIST || c.type == VM_MAP) st[n++] = (struct fr){c, 0, f->d + 1};
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t live = vm_live_objects();
    vm_value stk[MAX_STACK];
    int sp = 0;
    size_t p = 0;
    while (p < size) {
        uint8_t op = data[p++];
        uint8_t arg = p < size ? data[p] : 0;
        switch (op % 10) {
        case 0: /* small int */
            if (sp < MAX_STACK) stk[sp++] = vm_int((int8_t)arg), p++;
            break;
        case 1: /* float from 8 bytes */
            if (sp < MAX_STACK && p + 8 <= size) {
                double f;
                memcpy(&f, data + p, 8);
                p += 8;
                stk[sp++] = vm_float(f);
            }
            break;
        case 2: { /* string of arg bytes */
            size_t n = SGL_MIN((size_t)arg, size - p - (p < size));
            if (sp < MAX_STACK && p < size) {
                stk[sp++] = vm_str_new((const char *)data + p + 1, n);
                p += 1 + n;
            }
            break;
        }
        case 3: /* wrap top k in a list */
        case 4: {
            int k = SGL_MIN((int)(arg % 4), sp);
            p++;
            vm_value l = vm_list_new((uint32_t)k);
            for (int i = sp - k; i < sp; i++) vm_list_push(l, stk[i]);
            sp -= k;
            stk[sp++] = l;
            break;
        }
        case 5: { /* nest the top arg times (a few make it deeper than the JSON reader takes) */
            p++;
            if (!sp) break;
            for (int i = 0; i < arg; i++) {
                vm_value l = vm_list_new(1);
                vm_list_push(l, stk[sp - 1]);
                stk[sp - 1] = l;
            }
            break;
        }
        case 6: /* map from pairs (key, value) on top */
            if (sp >= 2) {
                vm_value m = vm_map_new();
                vm_value val = stk[--sp], key = stk[--sp];
                if (vm_map_set(m, key, val, NULL) < 0) { /* unhashable: consumed */ }
                stk[sp++] = m;
            }
            break;
        case 7: /* share: duplicate the top */
            if (sp && sp < MAX_STACK) stk[sp] = vm_retain(stk[sp - 1]), sp++;
            break;
        case 8: /* index the top (copy-on-write unsharing) */
            if (sp && stk[sp - 1].type == VM_LIST && stk[sp - 1].as.l->len && sp < MAX_STACK) {
                vm_value r;
                if (vm_index_get(stk[sp - 1], vm_int(arg % stk[sp - 1].as.l->len), &r, NULL) == 0) stk[sp++] = r;
            }
            p++;
            break;
        default: /* none / bool */
            if (sp < MAX_STACK) stk[sp++] = arg & 1 ? vm_bool(arg & 2) : vm_none();
            p++;
            break;
        }
    }
    for (int i = 0; i < sp; i++) {
        vm_value v = stk[i];
        sgl_strbuf sb = {0};
        sgl_error err;
        if (vm_str_append(&sb, v) != 0 || vm_repr_append(&sb, v) != 0) abort();
        vm_value c = vm_deep_copy(v);
        bool eq = false, le = false;
        if (vm_equal_checked(v, c, &eq, &err) != 0) abort();
        /* A value equals its copy unless it holds a nan. */
        sgl_strbuf_clear(&sb);
        int jr = vm_json_dump(&sb, v, i & 1, &err);
        if (!eq && !awkward(v, 1 << 30)) abort();
        if (vm_compare(SGL_OP_LE, v, c, &le, &err) == 0 && eq && !le && !awkward(v, 1 << 30)) abort();
        if (jr == 0 && !awkward(v, VM_JSON_MAX_DEPTH - 1)) {
            vm_value w;
            if (vm_json_parse(sb.data ? sb.data : "", sb.len, &w, &err) != 0) {
                fprintf(stderr, "fuzz_value: printed JSON does not parse: %s\n", err.msg);
                abort();
            }
            if (!vm_equal(v, w)) abort();
            vm_release(w);
        }
        sgl_strbuf_free(&sb);
        vm_release(c);
        vm_release(v);
    }
    if (vm_live_objects() != live) {
        fprintf(stderr, "fuzz_value: %lld objects leaked\n", (long long)(vm_live_objects() - live));
        abort();
    }
    return 0;
}
