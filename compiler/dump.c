/* dump.c: `sglc dump --graph` in three formats:
 *   text  one line per node, regions indented (stable; golden tests)
 *   json  the schema in docs/compiler.md
 *   dot   Graphviz: one cluster per function and per region; solid edges
 *         for data, dashed blue edges for the stream/effect chain, dotted
 *         edges from a region node to its sub-regions
 * Node ids are the IR's own (%N), so the three agree. Dead nodes are not
 * shown. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/ir.h"

static const char *slot_name(const ir_fn *f, int64_t slot) {
    return slot >= 0 && (uint64_t)slot < f->n_params ? f->param_names[slot] : NULL;
}

static void put_k(const comp *c, int32_t k, FILE *out) {
    if (k < 0) fputs("<dyn>", out);
    else comp_const_write(c->consts, c->n_consts, (uint32_t)k, 48, out);
}

static void put_site(const comp *c, const ir_site *s, FILE *out) {
    bool first = true;
    fputc('(', out);
    if (s->name_k >= 0 || s->name_k == SGL_SITE_DYNAMIC) {
        put_k(c, s->name_k, out);
        first = false;
    }
    for (uint32_t i = 0; i < s->n_pos; i++, first = false) fputs(first ? "<arg>" : ", <arg>", out);
    for (uint32_t i = 0; i < s->n_kw; i++, first = false) {
        const sgl_kwarg_info *ki = sgl_kwarg_get((sgl_kwarg_id)s->kw_id[i]);
        fprintf(out, "%s%s=", first ? "" : ", ", ki ? ki->name : "?");
        put_k(c, s->kw_k[i], out);
    }
    fputc(')', out);
}

/* The attribute part of a node's line: what it does beyond op and inputs. */
static void put_attrs(const comp *c, const ir_fn *f, const ir_node *n, FILE *out) {
    switch (n->op) {
    case IR_CONST:
    case IR_APPEND_TEXT: put_k(c, n->k, out); break;
    case IR_LOAD:
    case IR_STORE:
    case IR_FOR: {
        const char *nm = slot_name(f, n->i);
        fprintf(out, "$%" PRId64, n->i);
        if (nm) fprintf(out, "(%s)", nm);
        break;
    }
    case IR_FN_REF:
    case IR_CALL:
    case IR_CALL_FRESH:
        fputs(n->i >= 0 && (uint64_t)n->i < c->n_fns ? c->fns[n->i]->name : "?", out);
        break;
    case IR_UNOP:
    case IR_BINOP: fputs(sgl_op_name((sgl_op)n->i), out); break;
    case IR_BUILTIN:
    case IR_PURE_CALL:
        fputs(sgl_builtin_name((sgl_builtin)n->i), out);
        if (n->site) put_site(c, n->site, out);
        break;
    case IR_GEN:
    case IR_SELECT:
        if (n->site) put_site(c, n->site, out);
        break;
    case IR_APPEND: fputs(n->i == SGL_APPEND_STR ? "str" : n->i == SGL_APPEND_FMT ? "fmt" : n->i == SGL_APPEND_IMAGE ? "image" : n->i == SGL_APPEND_VAR_BEGIN ? "var_begin" : n->i == SGL_APPEND_VAR_END ? "var_end" : "value", out); break;
    case IR_ROLE_BEGIN:
    case IR_ROLE_END: fputs(sgl_role_name((sgl_role)n->i), out); break;
    case IR_JOIN: fputs(n->i == SGL_JOIN_GATHER ? "gather" : n->i == SGL_JOIN_CONCAT ? "concat" : "dynamic", out); break;
    default: break;
    }
}

static void put_loc(const comp *c, sgl_loc loc, FILE *out) {
    uint32_t line = 0, col = 0;
    if (loc.file < c->prog->n_files) sgl_source_line_col(&c->prog->files[loc.file], loc.start, &line, &col);
    fprintf(out, "%" PRIu32 ":%" PRIu32, line, col);
}

static void put_prefix(const comp *c, const ir_fn *f, FILE *out) {
    for (uint32_t i = 0; i < f->n_prefix; i++) {
        const sgl_bc_prefix_item *it = &f->prefix[i];
        if (it->kind == SGL_PREFIX_TEXT) {
            fputc(' ', out);
            comp_const_write(c->consts, c->n_consts, it->konst, 400, out);
        } else {
            fprintf(out, " <%s%s>", it->kind == SGL_PREFIX_ROLE_END ? "/" : "", sgl_role_name((sgl_role)it->role));
        }
    }
}

/* ---- text ---- */

static void text_region(const comp *c, const ir_fn *f, uint32_t r, int ind, FILE *out) {
    const ir_region *R = &f->regions[r];
    for (uint32_t i = 0; i < R->len; i++) {
        ir_ref id = R->nodes[i];
        const ir_node *n = &f->nodes[id];
        if (n->dead) continue;
        unsigned fl = ir_op_flags(n->op);
        fprintf(out, "%*s%%%u = %s", ind, "", id, ir_op_name(n->op));
        for (uint32_t j = 0; j < n->n_in; j++) fprintf(out, "%s%%%u", j ? ", " : " ", n->in[j]);
        char *attrs = NULL;
        size_t alen = 0;
        FILE *m = open_memstream(&attrs, &alen);
        if (m) {
            put_attrs(c, f, n, m);
            fclose(m);
        }
        if (alen) fprintf(out, " %s", attrs);
        free(attrs);
        if (fl & IRF_EFFECT) {
            if (n->chain == IR_NONE) fputs(" !entry", out);
            else fprintf(out, " !%%%u", n->chain);
        }
        fputs("  @", out);
        put_loc(c, n->loc, out);
        fputc('\n', out);
        if (fl & IRF_REGION) {
            static const char *const labels[][2] = {{"then", "else"}, {"body", ""}, {"cond", "body"}};
            int li = n->op == IR_IF ? 0 : n->op == IR_FOR ? 1 : 2;
            for (int k = 0; k < 2; k++) {
                if (n->reg[k] == UINT32_MAX) continue;
                fprintf(out, "%*s%s: (region %u)\n", ind + 2, "", labels[li][k], n->reg[k]);
                text_region(c, f, n->reg[k], ind + 4, out);
            }
        }
    }
}

static void text_fn(const comp *c, const ir_fn *f, FILE *out) {
    fprintf(out, "fn %s(", f->name);
    for (uint32_t i = 0; i < f->n_params; i++) fprintf(out, "%s%s", i ? ", " : "", f->param_names[i]);
    fprintf(out, ") slots=%u", f->n_slots);
    if (f->flags & SGL_FNF_STREAM) fputs(" stream", out);
    if (f->flags & SGL_FNF_REORDER) fputs(" reorder", out);
    if (f->flags & SGL_FNF_MAIN) fputs(" main", out);
    fputc('\n', out);
    if (f->n_prefix) {
        fputs("  prefix:", out);
        put_prefix(c, f, out);
        fputc('\n', out);
    }
    for (uint32_t i = 0; i < f->n_moves; i++) {
        fputs("  moved: ", out);
        comp_const_write(c->consts, c->n_consts, (uint32_t)f->moves[i].k, 48, out);
        fprintf(out, " from line %u ahead of line %u\n", f->moves[i].from_line, f->moves[i].to_line);
    }
    text_region(c, f, 0, 2, out);
}

/* ---- json ---- */

static void json_str(FILE *out, const char *s) { comp_write_quoted(out, s, strlen(s), SIZE_MAX, true); }

/* Writes constant k as JSON (strings, numbers, bools, null, arrays, objects). */
static void json_const(const comp *c, int32_t k, FILE *out) {
    if (k < 0 || (uint32_t)k >= c->n_consts) {
        fputs("null", out);
        return;
    }
    const sgl_const *x = &c->consts[k];
    switch (x->kind) {
    case SGL_CONST_NONE: fputs("null", out); break;
    case SGL_CONST_BOOL: fputs(x->b ? "true" : "false", out); break;
    case SGL_CONST_INT: fprintf(out, "%" PRId64, x->i); break;
    case SGL_CONST_FLOAT:
        if (x->f != x->f || x->f - x->f != 0) fputs("null", out);
        else fprintf(out, "%.17g", x->f);
        break;
    case SGL_CONST_STRING: comp_write_quoted(out, x->str.bytes, x->str.len, SIZE_MAX, true); break;
    case SGL_CONST_LIST:
        fputc('[', out);
        for (uint32_t i = 0; i < x->agg.n; i++) {
            if (i) fputc(',', out);
            json_const(c, (int32_t)x->agg.items[i], out);
        }
        fputc(']', out);
        break;
    case SGL_CONST_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < x->agg.n; i++) {
            if (i) fputc(',', out);
            json_const(c, (int32_t)x->agg.items[2 * i], out);
            fputc(':', out);
            json_const(c, (int32_t)x->agg.items[2 * i + 1], out);
        }
        fputc('}', out);
        break;
    }
}

static void json_fn(const comp *c, const ir_fn *f, FILE *out) {
    fputs("{\"name\":", out);
    json_str(out, f->name);
    fputs(",\"params\":[", out);
    for (uint32_t i = 0; i < f->n_params; i++) {
        if (i) fputc(',', out);
        json_str(out, f->param_names[i]);
    }
    fprintf(out, "],\"slots\":%u,\"stream\":%s,\"reorder\":%s,\"main\":%s,\"opt_level\":%d,\"prefix\":[", f->n_slots,
            (f->flags & SGL_FNF_STREAM) ? "true" : "false", (f->flags & SGL_FNF_REORDER) ? "true" : "false",
            (f->flags & SGL_FNF_MAIN) ? "true" : "false", c->opts.opt_level);
    for (uint32_t i = 0; i < f->n_prefix; i++) {
        const sgl_bc_prefix_item *it = &f->prefix[i];
        if (i) fputc(',', out);
        if (it->kind == SGL_PREFIX_TEXT) {
            fputs("{\"kind\":\"text\",\"text\":", out);
            json_const(c, (int32_t)it->konst, out);
            fputc('}', out);
        } else {
            fprintf(out, "{\"kind\":\"%s\",\"role\":\"%s\"}", it->kind == SGL_PREFIX_ROLE_BEGIN ? "role_begin" : "role_end",
                    sgl_role_name((sgl_role)it->role));
        }
    }
    fputs("],\"moves\":[", out);
    for (uint32_t i = 0; i < f->n_moves; i++) {
        if (i) fputc(',', out);
        fputs("{\"text\":", out);
        json_const(c, f->moves[i].k, out);
        fprintf(out, ",\"from_line\":%u,\"to_line\":%u}", f->moves[i].from_line, f->moves[i].to_line);
    }
    fputs("],\"regions\":[", out);
    for (uint32_t r = 0; r < f->n_regions; r++) {
        const ir_region *R = &f->regions[r];
        if (r && R->owner == IR_NONE) continue; /* detached by folding */
        if (R->owner != IR_NONE && f->nodes[R->owner].dead) continue;
        fprintf(out, "%s{\"id\":%u,\"owner\":", r ? "," : "", r);
        if (R->owner == IR_NONE) fputs("null", out);
        else fprintf(out, "%u", R->owner);
        fprintf(out, ",\"loop\":%s,\"nodes\":[", R->loop ? "true" : "false");
        bool first = true;
        for (uint32_t i = 0; i < R->len; i++) {
            if (f->nodes[R->nodes[i]].dead) continue;
            fprintf(out, "%s%u", first ? "" : ",", R->nodes[i]);
            first = false;
        }
        fputs("]}", out);
    }
    fputs("],\"nodes\":[", out);
    bool first = true;
    for (ir_ref id = 0; id < f->n_nodes; id++) {
        const ir_node *n = &f->nodes[id];
        if (n->dead) continue;
        unsigned fl = ir_op_flags(n->op);
        fprintf(out, "%s\n{\"id\":%u,\"op\":\"%s\",\"region\":%u,\"kind\":\"%s\",\"inputs\":[", first ? "" : ",", id,
                ir_op_name(n->op), n->region,
                (fl & IRF_STREAM) ? "stream" : (fl & IRF_REGION) ? "region" : (fl & IRF_EFFECT) ? "effect" : "value");
        first = false;
        for (uint32_t j = 0; j < n->n_in; j++) fprintf(out, "%s%u", j ? "," : "", n->in[j]);
        fputs("],\"chain\":", out);
        if ((fl & IRF_EFFECT) && n->chain != IR_NONE) fprintf(out, "%u", n->chain);
        else fputs("null", out);
        if (fl & IRF_REGION) {
            fputs(",\"subregions\":[", out);
            for (int k = 0; k < 2; k++)
                if (n->reg[k] != UINT32_MAX) fprintf(out, "%s%u", k ? "," : "", n->reg[k]);
            fputc(']', out);
        }
        if (n->op == IR_CONST || n->op == IR_APPEND_TEXT) {
            fputs(",\"value\":", out);
            json_const(c, n->k, out);
        }
        switch (n->op) {
        case IR_LOAD: case IR_STORE: case IR_FOR: fprintf(out, ",\"slot\":%" PRId64, n->i); break;
        case IR_FN_REF: case IR_CALL: case IR_CALL_FRESH:
            fputs(",\"fn\":", out);
            json_str(out, n->i >= 0 && (uint64_t)n->i < c->n_fns ? c->fns[n->i]->name : "?");
            break;
        case IR_UNOP: case IR_BINOP: fputs(",\"operator\":", out), json_str(out, sgl_op_name((sgl_op)n->i)); break;
        case IR_BUILTIN: case IR_PURE_CALL: fputs(",\"builtin\":", out), json_str(out, sgl_builtin_name((sgl_builtin)n->i)); break;
        case IR_APPEND:
            fprintf(out, ",\"mode\":\"%s\"", n->i == SGL_APPEND_STR ? "str" : n->i == SGL_APPEND_FMT ? "fmt" : n->i == SGL_APPEND_IMAGE ? "image" : n->i == SGL_APPEND_VAR_BEGIN ? "var_begin" : n->i == SGL_APPEND_VAR_END ? "var_end" : "value");
            break;
        case IR_ROLE_BEGIN: case IR_ROLE_END: fprintf(out, ",\"role\":\"%s\"", sgl_role_name((sgl_role)n->i)); break;
        case IR_JOIN:
            fprintf(out, ",\"mode\":\"%s\"", n->i == SGL_JOIN_GATHER ? "gather" : n->i == SGL_JOIN_CONCAT ? "concat" : "dynamic");
            break;
        default: break;
        }
        if (n->site) {
            const ir_site *s = n->site;
            fputs(",\"site\":{\"name\":", out);
            if (s->name_k >= 0) json_const(c, s->name_k, out);
            else fputs(s->name_k == SGL_SITE_DYNAMIC ? "\"<dynamic>\"" : "null", out);
            fprintf(out, ",\"positional\":%u,\"kwargs\":[", s->n_pos);
            for (uint32_t i = 0; i < s->n_kw; i++) {
                const sgl_kwarg_info *ki = sgl_kwarg_get((sgl_kwarg_id)s->kw_id[i]);
                fprintf(out, "%s{\"name\":", i ? "," : "");
                json_str(out, ki ? ki->name : "?");
                fputs(",\"value\":", out);
                if (s->kw_k[i] >= 0) json_const(c, s->kw_k[i], out);
                else fputs("null", out);
                fprintf(out, ",\"dynamic\":%s}", s->kw_k[i] < 0 ? "true" : "false");
            }
            fputs("]}", out);
        }
        uint32_t line = 0, col = 0;
        if (n->loc.file < c->prog->n_files) sgl_source_line_col(&c->prog->files[n->loc.file], n->loc.start, &line, &col);
        fprintf(out, ",\"line\":%u,\"col\":%u}", line, col);
    }
    fputs("]}", out);
}

/* ---- dot ---- */

/* Writes text escaped for a DOT double-quoted label. */
static void dot_escape(FILE *out, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '"' || ch == '\\') {
            fputc('\\', out);
            fputc(ch, out);
        } else if (ch == '\n') {
            fputs("\\n", out);
        } else if ((unsigned char)ch < 0x20) {
            fputc(' ', out);
        } else {
            fputc(ch, out);
        }
    }
}

static void dot_region(const comp *c, const ir_fn *f, uint32_t r, const char *label, FILE *out) {
    const ir_region *R = &f->regions[r];
    unsigned fi = f->index;
    fprintf(out, "subgraph cluster_f%u_r%u {\nlabel=\"%s\"; style=rounded; color=gray60;\n", fi, r, label);
    for (uint32_t i = 0; i < R->len; i++) {
        ir_ref id = R->nodes[i];
        const ir_node *n = &f->nodes[id];
        if (n->dead) continue;
        unsigned fl = ir_op_flags(n->op);
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m) {
            fprintf(m, "%%%u %s ", id, ir_op_name(n->op));
            put_attrs(c, f, n, m);
            fclose(m);
        }
        fprintf(out, "f%u_n%u [label=\"", fi, id);
        if (buf) dot_escape(out, buf, len);
        free(buf);
        const char *shape = (fl & IRF_REGION) ? "hexagon" : (fl & IRF_STREAM) ? "box" : (fl & IRF_EFFECT) ? "box" : "ellipse";
        const char *color = (fl & IRF_STREAM) ? "lightblue" : (fl & IRF_REGION) ? "khaki" : (fl & IRF_EFFECT) ? "lightpink" : "white";
        fprintf(out, "\" shape=%s style=filled fillcolor=%s];\n", shape, color);
        if (fl & IRF_REGION) {
            static const char *const labels[][2] = {{"then", "else"}, {"body", ""}, {"cond", "body"}};
            int li = n->op == IR_IF ? 0 : n->op == IR_FOR ? 1 : 2;
            for (int k = 0; k < 2; k++) {
                if (n->reg[k] == UINT32_MAX) continue;
                char lab[64];
                snprintf(lab, sizeof lab, "%%%u %s", id, labels[li][k]);
                dot_region(c, f, n->reg[k], lab, out);
            }
        }
    }
    fputs("}\n", out);
}

static void dot_edges(const ir_fn *f, FILE *out) {
    unsigned fi = f->index;
    for (ir_ref id = 0; id < f->n_nodes; id++) {
        const ir_node *n = &f->nodes[id];
        if (n->dead) continue;
        for (uint32_t j = 0; j < n->n_in; j++) fprintf(out, "f%u_n%u -> f%u_n%u;\n", fi, n->in[j], fi, id);
        if ((ir_op_flags(n->op) & IRF_EFFECT) && n->chain != IR_NONE)
            fprintf(out, "f%u_n%u -> f%u_n%u [style=dashed color=blue];\n", fi, n->chain, fi, id);
        for (int k = 0; k < 2; k++) {
            if (n->reg[k] == UINT32_MAX) continue;
            const ir_region *R = &f->regions[n->reg[k]];
            for (uint32_t i = 0; i < R->len; i++)
                if (!f->nodes[R->nodes[i]].dead) {
                    fprintf(out, "f%u_n%u -> f%u_n%u [style=dotted];\n", fi, id, fi, R->nodes[i]);
                    break;
                }
        }
    }
}

static void dot_fn(const comp *c, const ir_fn *f, FILE *out) {
    char lab[256];
    snprintf(lab, sizeof lab, "fn %s", f->name);
    fprintf(out, "subgraph cluster_f%u {\nlabel=\"", f->index);
    dot_escape(out, lab, strlen(lab));
    if (f->n_prefix) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m) {
            fputs("\nprefix:", m);
            put_prefix(c, f, m);
            fclose(m);
            dot_escape(out, buf, len);
        }
        free(buf);
    }
    fputs("\"; style=solid; color=black;\n", out);
    dot_region(c, f, 0, "body", out);
    fputs("}\n", out);
    dot_edges(f, out);
}

void ir_dump_begin(compiler_graph_format fmt, FILE *out) {
    if (fmt == COMPILER_GRAPH_JSON) fputs("{\"schema\":\"sglc-graph-1\",\"functions\":[", out);
    if (fmt == COMPILER_GRAPH_DOT)
        fputs("digraph sgl {\nrankdir=TB; compound=true; node [fontname=\"monospace\" fontsize=10];\n", out);
}

void ir_dump_end(compiler_graph_format fmt, FILE *out) {
    if (fmt == COMPILER_GRAPH_JSON) fputs("]}\n", out);
    if (fmt == COMPILER_GRAPH_DOT) fputs("}\n", out);
}

void ir_dump_fn(const comp *c, const ir_fn *f, compiler_graph_format fmt, FILE *out, bool first) {
    switch (fmt) {
    case COMPILER_GRAPH_TEXT:
        if (!first) fputc('\n', out);
        text_fn(c, f, out);
        break;
    case COMPILER_GRAPH_JSON:
        if (!first) fputs(",\n", out);
        json_fn(c, f, out);
        break;
    case COMPILER_GRAPH_DOT: dot_fn(c, f, out); break;
    }
}
