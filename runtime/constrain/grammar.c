/* grammar.c: EBNF/GBNF text -> rules (placeholder until the parser lands). */
#include "runtime/constrain/cons_internal.h"

int cons_gbnf_parse(cons_grammar *g, const char *text, size_t len, cons_diag *diag) {
    (void)g;
    (void)text;
    (void)len;
    cons_diag_set(diag, -1, "grammar constraints are not supported yet");
    return -1;
}
