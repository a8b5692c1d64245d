/* schema.c: JSON schema -> rules (placeholder until the compiler lands). */
#include "runtime/constrain/cons_internal.h"

int cons_schema_build(cons_grammar *g, const char *text, size_t len, const cons_options *opt,
                      cons_diag *diag) {
    (void)g;
    (void)text;
    (void)len;
    (void)opt;
    cons_diag_set(diag, -1, "JSON schema constraints are not supported yet");
    return -1;
}
