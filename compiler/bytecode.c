/* bytecode.c: static opcode facts, module look-ups and the disassembler
 * (`sglc dump --bytecode`). The disassembly is stable text (no addresses) so
 * golden tests can compare it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/ir.h"

static const sgl_opcode_info opcode_table[] = {
#define OPCODE(name, fmt, pops, pushes, flags, doc) {#name, SGL_FMT_##fmt, pops, pushes, flags, doc},
#include "compiler/opcodes.def"
#undef OPCODE
};
_Static_assert(SGL_ARRAY_LEN(opcode_table) == SGL_BC__COUNT, "opcode table out of step with opcodes.def");
_Static_assert(SGL_BC__COUNT <= 256, "opcodes must fit in 8 bits");

const sgl_opcode_info *sgl_opcode_get(sgl_opcode op) {
    return (unsigned)op < SGL_BC__COUNT ? &opcode_table[op] : NULL;
}

const char *sgl_role_name(sgl_role r) {
    static const char *const names[] = {"system", "user", "assistant"};
    _Static_assert(SGL_ARRAY_LEN(names) == SGL_ROLE__COUNT, "role names");
    return (unsigned)r < SGL_ROLE__COUNT ? names[r] : "?";
}

int sgl_module_find_fn(const sgl_module *m, const char *name) {
    for (uint32_t i = 0; i < m->n_fns; i++)
        if (!strcmp(m->fns[i].name, name)) return (int)i;
    return -1;
}

const sgl_bc_line *sgl_bc_line_at(const sgl_bc_function *f, uint32_t pc) {
    if (!f->n_lines) return NULL;
    uint32_t lo = 0, hi = f->n_lines; /* last entry with pc <= target */
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (f->lines[mid].pc <= pc) lo = mid;
        else hi = mid;
    }
    return &f->lines[lo];
}

/* ---- disassembler ---- */

/* Writes s[0..len) as a quoted string, escaping control bytes; long strings
 * are cut at max bytes with "..." after the quote (never in JSON). */
void comp_write_quoted(FILE *out, const char *s, size_t len, size_t max, bool json) {
    fputc('"', out);
    size_t n = len < max ? len : max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        default:
            if (c < 0x20 || c == 0x7f) fprintf(out, json ? "\\u%04x" : "\\x%02x", c);
            else fputc(c, out);
        }
    }
    fputc('"', out);
    if (n < len) fputs("...", out);
}

static void put_quoted(FILE *out, const char *s, size_t len, size_t max) { comp_write_quoted(out, s, len, max, false); }

/* Writes constant k of pool[0..n) in SGL literal syntax. */
void comp_const_write(const sgl_const *pool, uint32_t n, uint32_t k, size_t max, FILE *out) {
    if (k >= n) {
        fprintf(out, "<bad const %" PRIu32 ">", k);
        return;
    }
    const sgl_const *c = &pool[k];
    switch (c->kind) {
    case SGL_CONST_NONE: fputs("none", out); break;
    case SGL_CONST_BOOL: fputs(c->b ? "true" : "false", out); break;
    case SGL_CONST_INT: fprintf(out, "%" PRId64, c->i); break;
    case SGL_CONST_FLOAT: {
        char buf[40];
        snprintf(buf, sizeof buf, "%.17g", c->f);
        fputs(buf, out);
        if (!strpbrk(buf, ".eEn")) fputs(".0", out); /* 3.0, not 3: tell floats from ints */
        break;
    }
    case SGL_CONST_STRING: put_quoted(out, c->str.bytes, c->str.len, max); break;
    case SGL_CONST_LIST:
        fputc('[', out);
        for (uint32_t i = 0; i < c->agg.n; i++) {
            if (i) fputs(", ", out);
            comp_const_write(pool, n, c->agg.items[i], max, out);
        }
        fputc(']', out);
        break;
    case SGL_CONST_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < c->agg.n; i++) {
            if (i) fputs(", ", out);
            comp_const_write(pool, n, c->agg.items[2 * i], max, out);
            fputs(": ", out);
            comp_const_write(pool, n, c->agg.items[2 * i + 1], max, out);
        }
        fputc('}', out);
        break;
    }
}

static void put_const(FILE *out, const sgl_module *m, uint32_t k, size_t max) {
    comp_const_write(m->consts, m->n_consts, k, max, out);
}

static void put_site(FILE *out, const sgl_module *m, uint32_t s) {
    if (s >= m->n_sites) {
        fprintf(out, "<bad site %" PRIu32 ">", s);
        return;
    }
    const sgl_bc_site *site = &m->sites[s];
    fprintf(out, "%s(", sgl_builtin_name((sgl_builtin)site->builtin));
    bool first = true;
    if (site->name >= 0) {
        put_const(out, m, (uint32_t)site->name, 40);
        first = false;
    } else if (site->name == SGL_SITE_DYNAMIC) {
        fputs("<name>", out);
        first = false;
    }
    for (uint32_t i = 0; i < site->n_pos; i++, first = false) fputs(first ? "<arg>" : ", <arg>", out);
    for (uint32_t i = 0; i < site->n_kwargs; i++, first = false) {
        const sgl_kwarg_info *ki = sgl_kwarg_get((sgl_kwarg_id)site->kwargs[i].id);
        fprintf(out, "%s%s=", first ? "" : ", ", ki ? ki->name : "?");
        if (site->kwargs[i].konst >= 0) put_const(out, m, (uint32_t)site->kwargs[i].konst, 40);
        else fputs("<dyn>", out);
    }
    fputc(')', out);
}

void compiler_disasm_fn(const sgl_module *m, uint32_t fi, FILE *out) {
    if (fi >= m->n_fns) return;
    const sgl_bc_function *f = &m->fns[fi];
    fprintf(out, "fn %s(", f->name);
    for (uint32_t i = 0; i < f->n_params; i++) fprintf(out, "%s%s", i ? ", " : "", f->param_names[i]);
    fprintf(out, ") params=%" PRIu32 " locals=%" PRIu32 " stack=%" PRIu32, f->n_params, f->n_locals,
            f->max_stack);
    if (f->flags & SGL_FNF_STREAM) fputs(" stream", out);
    if (f->flags & SGL_FNF_MAIN) fputs(" main", out);
    if (f->flags & SGL_FNF_REORDER) fputs(" reorder", out);
    fputc('\n', out);
    if (f->n_prefix) {
        fputs("  prefix:", out);
        for (uint32_t i = 0; i < f->n_prefix; i++) {
            const sgl_bc_prefix_item *it = &f->prefix[i];
            if (it->kind == SGL_PREFIX_TEXT) {
                fputc(' ', out);
                put_const(out, m, it->konst, 60);
            } else {
                fprintf(out, " <%s%s>", it->kind == SGL_PREFIX_ROLE_END ? "/" : "", sgl_role_name((sgl_role)it->role));
            }
        }
        fputc('\n', out);
    }
    const sgl_bc_line *last = NULL;
    for (uint32_t pc = 0; pc < f->n_code; pc++) {
        sgl_instr ins = f->code[pc];
        sgl_opcode op = SGL_INSTR_OP(ins);
        const sgl_opcode_info *oi = sgl_opcode_get(op);
        const sgl_bc_line *ln = sgl_bc_line_at(f, pc);
        char where[32] = "";
        if (ln && ln != last && (!last || ln->line != last->line || ln->col != last->col))
            snprintf(where, sizeof where, "%" PRIu32 ":%" PRIu32, ln->line, ln->col);
        last = ln;
        fprintf(out, "  %04" PRIu32 " %7s  ", pc, where);
        if (!oi) {
            fprintf(out, "<bad opcode %u>\n", (unsigned)op);
            continue;
        }
        uint32_t a = 0, b = 0;
        switch (oi->format) {
        case SGL_FMT_N: fprintf(out, "%s", oi->name); break;
        case SGL_FMT_A: a = SGL_INSTR_A(ins); fprintf(out, "%-16s %" PRIu32, oi->name, a); break;
        case SGL_FMT_AB:
            a = SGL_INSTR_A12(ins);
            b = SGL_INSTR_B12(ins);
            fprintf(out, "%-16s %" PRIu32 " %" PRIu32, oi->name, a, b);
            break;
        case SGL_FMT_J:
            fprintf(out, "%-16s %+" PRId32 "\t; -> %04" PRId64, oi->name, SGL_INSTR_SJ(ins),
                    (int64_t)pc + 1 + SGL_INSTR_SJ(ins));
            break;
        }
        switch (op) {
        case SGL_BC_LOAD_CONST:
        case SGL_BC_APPEND_TEXT:
            fputs("\t; ", out);
            put_const(out, m, a, 40);
            break;
        case SGL_BC_LOAD_LOCAL:
        case SGL_BC_STORE_LOCAL:
            if (a < f->n_params) fprintf(out, "\t; %s", f->param_names[a]);
            break;
        case SGL_BC_LOAD_FN:
        case SGL_BC_CALL:
        case SGL_BC_CALL_FRESH:
            if (a < m->n_fns) fprintf(out, "\t; %s", m->fns[a].name);
            break;
        case SGL_BC_CALL_BUILTIN: fprintf(out, "\t; %s", sgl_builtin_name((sgl_builtin)a)); break;
        case SGL_BC_CALL_BUILTIN_KW:
        case SGL_BC_GEN:
        case SGL_BC_SELECT:
            fputs("\t; ", out);
            put_site(out, m, a);
            break;
        case SGL_BC_ROLE_BEGIN:
        case SGL_BC_ROLE_END: fprintf(out, "\t; %s", sgl_role_name((sgl_role)a)); break;
        case SGL_BC_APPEND:
            fprintf(out, "\t; %s", a == SGL_APPEND_STR ? "str" : a == SGL_APPEND_FMT ? "fmt" : a == SGL_APPEND_IMAGE ? "image" : a == SGL_APPEND_VAR_BEGIN ? "var_begin" : a == SGL_APPEND_VAR_END ? "var_end" : "value");
            break;
        case SGL_BC_JOIN:
            fprintf(out, "\t; %s", a == SGL_JOIN_GATHER ? "gather" : a == SGL_JOIN_CONCAT ? "concat" : "dynamic");
            break;
        default: break;
        }
        fputc('\n', out);
    }
}

void compiler_disasm(const sgl_module *m, FILE *out) {
    fprintf(out, "module: %" PRIu32 " functions, %" PRIu32 " constants, %" PRIu32 " call sites, -O%d\n", m->n_fns,
            m->n_consts, m->n_sites, m->opt_level);
    for (uint32_t i = 0; i < m->n_consts; i++) {
        fprintf(out, "  k%-4" PRIu32 " ", i);
        put_const(out, m, i, 60);
        fputc('\n', out);
    }
    for (uint32_t i = 0; i < m->n_sites; i++) {
        fprintf(out, "  site%-3" PRIu32 " %" PRIu32 ":%" PRIu32 " ", i, m->sites[i].line, m->sites[i].col);
        put_site(out, m, i);
        fputc('\n', out);
    }
    for (uint32_t i = 0; i < m->n_fns; i++) {
        fputc('\n', out);
        compiler_disasm_fn(m, i, out);
    }
}

void compiler_module_free(sgl_module *m) {
    if (!m) return;
    sgl_arena *a = m->priv; /* the module itself lives in this arena */
    sgl_arena_free(a);
    free(a);
}
