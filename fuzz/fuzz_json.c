/* fuzz_json: libFuzzer target over the project's JSON reader
 * (vm_json_parse, behind json(), `sglc run` arguments and results) and the
 * value writers. Arbitrary bytes: either a parse error, or a value whose
 * compact dump parses back to a value with the same dump (idempotent after
 * one round: nan/inf become null); str() and repr() of it and deep copies
 * must not fail, and no heap object may outlive the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm/value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t live = vm_live_objects();
    vm_value v;
    sgl_error err;
    if (vm_json_parse((const char *)data, size, &v, &err) == 0) {
        sgl_strbuf d1 = {0}, d2 = {0}, s = {0};
        if (vm_json_dump(&d1, v, true, &err) != 0) abort();
        vm_value w;
        if (vm_json_parse(d1.data ? d1.data : "", d1.len, &w, &err) != 0) {
            fprintf(stderr, "fuzz_json: own output does not parse: %s\n", err.msg);
            abort();
        }
        if (vm_json_dump(&d2, w, true, &err) != 0) abort();
        if (d1.len != d2.len || memcmp(d1.data, d2.data, d1.len) != 0) {
            fprintf(stderr, "fuzz_json: dump not idempotent:\n%s\n%s\n", d1.data, d2.data);
            abort();
        }
        vm_value c = vm_deep_copy(w);
        if (!vm_equal(w, c)) abort();
        if (vm_str_append(&s, v) != 0 || vm_repr_append(&s, v) != 0) abort();
        vm_release(c);
        vm_release(w);
        vm_release(v);
        sgl_strbuf_free(&d1);
        sgl_strbuf_free(&d2);
        sgl_strbuf_free(&s);
    }
    if (vm_live_objects() != live) {
        fprintf(stderr, "fuzz_json: %lld objects leaked\n", (long long)(vm_live_objects() - live));
        abort();
    }
    return 0;
}
