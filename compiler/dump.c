/* dump.c: `sglc dump --graph` in three formats:
 *   text  one line per node, regions indented (stable; golden tests)
 *   json  the schema in docs/compiler.md
 *   dot   Graphviz: one cluster per function and per region; solid edges
 *         for data, dashed blue edges for the stream/effect chain, dotted
 *         edges from a region node to its sub-regions; gen and select drawn
 *         apart from the other nodes; a legend cluster explains them
 *   (json is built with cJSON, one function object at a time)
 * Node ids are the IR's own (%N), so the three agree. Dead nodes are not
 * shown. */
#include <cjson/cJSON.h>
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

/* ---- json (cJSON) ---- */

/* Strings keep the compiler's JSON quoting (NUL bytes and invalid UTF-8
 * escaped, which cJSON's C strings cannot carry) as raw items. */
static cJSON *json_bytes(const char *s, size_t n) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return cJSON_CreateNull();
    comp_write_quoted(m, s, n, SIZE_MAX, true);
    fclose(m);
    cJSON *r = cJSON_CreateRaw(buf ? buf : "\"\"");
    free(buf);
    return r;
}

static cJSON *json_str(const char *s) { return json_bytes(s, strlen(s)); }

/* Constant k as JSON (strings, numbers, bools, null, arrays, objects). */
static cJSON *json_const(const comp *c, int32_t k) {
    if (k < 0 || (uint32_t)k >= c->n_consts) return cJSON_CreateNull();
    const sgl_const *x = &c->consts[k];
    switch (x->kind) {
    case SGL_CONST_NONE: return cJSON_CreateNull();
    case SGL_CONST_BOOL: return cJSON_CreateBool(x->b);
    case SGL_CONST_INT: {
        char num[32]; /* exact, beyond a double's 53 bits */
        snprintf(num, sizeof num, "%" PRId64, x->i);
        return cJSON_CreateRaw(num);
    }
    case SGL_CONST_FLOAT:
        if (x->f != x->f || x->f - x->f != 0) return cJSON_CreateNull();
        return cJSON_CreateNumber(x->f);
    case SGL_CONST_STRING: return json_bytes(x->str.bytes, x->str.len);
    case SGL_CONST_LIST: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t i = 0; i < x->agg.n; i++) cJSON_AddItemToArray(a, json_const(c, (int32_t)x->agg.items[i]));
        return a;
    }
    case SGL_CONST_MAP: {
        /* keys are any constant: written as JSON text of the key */
        cJSON *o = cJSON_CreateObject();
        for (uint32_t i = 0; i < x->agg.n; i++) {
            const sgl_const *kc = (uint32_t)x->agg.items[2 * i] < c->n_consts ? &c->consts[x->agg.items[2 * i]] : NULL;
            char *key = NULL;
            if (kc && kc->kind == SGL_CONST_STRING) {
                key = sgl_strndup(kc->str.bytes, kc->str.len);
            } else {
                cJSON *kj = json_const(c, (int32_t)x->agg.items[2 * i]);
                key = cJSON_PrintUnformatted(kj);
                cJSON_Delete(kj);
            }
            cJSON_AddItemToObject(o, key ? key : "", json_const(c, (int32_t)x->agg.items[2 * i + 1]));
            if (kc && kc->kind == SGL_CONST_STRING) free(key);
            else cJSON_free(key);
        }
        return o;
    }
    }
    return cJSON_CreateNull();
}

static cJSON *json_fn(const comp *c, const ir_fn *f) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "name", json_str(f->name));
    cJSON *params = cJSON_AddArrayToObject(o, "params");
    for (uint32_t i = 0; i < f->n_params; i++) cJSON_AddItemToArray(params, json_str(f->param_names[i]));
    cJSON_AddNumberToObject(o, "slots", f->n_slots);
    cJSON_AddBoolToObject(o, "stream", (f->flags & SGL_FNF_STREAM) != 0);
    cJSON_AddBoolToObject(o, "reorder", (f->flags & SGL_FNF_REORDER) != 0);
    cJSON_AddBoolToObject(o, "main", (f->flags & SGL_FNF_MAIN) != 0);
    cJSON_AddNumberToObject(o, "opt_level", c->opts.opt_level);
    cJSON *prefix = cJSON_AddArrayToObject(o, "prefix");
    for (uint32_t i = 0; i < f->n_prefix; i++) {
        const sgl_bc_prefix_item *it = &f->prefix[i];
        cJSON *p = cJSON_CreateObject();
        if (it->kind == SGL_PREFIX_TEXT) {
            cJSON_AddStringToObject(p, "kind", "text");
            cJSON_AddItemToObject(p, "text", json_const(c, (int32_t)it->konst));
        } else {
            cJSON_AddStringToObject(p, "kind", it->kind == SGL_PREFIX_ROLE_BEGIN ? "role_begin" : "role_end");
            cJSON_AddStringToObject(p, "role", sgl_role_name((sgl_role)it->role));
        }
        cJSON_AddItemToArray(prefix, p);
    }
    cJSON *moves = cJSON_AddArrayToObject(o, "moves");
    for (uint32_t i = 0; i < f->n_moves; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToObject(m, "text", json_const(c, f->moves[i].k));
        cJSON_AddNumberToObject(m, "from_line", f->moves[i].from_line);
        cJSON_AddNumberToObject(m, "to_line", f->moves[i].to_line);
        cJSON_AddItemToArray(moves, m);
    }
    cJSON *regions = cJSON_AddArrayToObject(o, "regions");
    for (uint32_t r = 0; r < f->n_regions; r++) {
        const ir_region *R = &f->regions[r];
        if (r && R->owner == IR_NONE) continue; /* detached by folding */
        if (R->owner != IR_NONE && f->nodes[R->owner].dead) continue;
        cJSON *ro = cJSON_CreateObject();
        cJSON_AddNumberToObject(ro, "id", r);
        if (R->owner == IR_NONE) cJSON_AddNullToObject(ro, "owner");
        else cJSON_AddNumberToObject(ro, "owner", R->owner);
        cJSON_AddBoolToObject(ro, "loop", R->loop);
        cJSON *nodes = cJSON_AddArrayToObject(ro, "nodes");
        for (uint32_t i = 0; i < R->len; i++)
            if (!f->nodes[R->nodes[i]].dead) cJSON_AddItemToArray(nodes, cJSON_CreateNumber(R->nodes[i]));
        cJSON_AddItemToArray(regions, ro);
    }
    cJSON *nodes = cJSON_AddArrayToObject(o, "nodes");
    for (ir_ref id = 0; id < f->n_nodes; id++) {
        const ir_node *n = &f->nodes[id];
        if (n->dead) continue;
        unsigned fl = ir_op_flags(n->op);
        cJSON *no = cJSON_CreateObject();
        cJSON_AddNumberToObject(no, "id", id);
        cJSON_AddStringToObject(no, "op", ir_op_name(n->op));
        cJSON_AddNumberToObject(no, "region", n->region);
        cJSON_AddStringToObject(no, "kind", (fl & IRF_STREAM)   ? "stream"
                                            : (fl & IRF_REGION) ? "region"
                                            : (fl & IRF_EFFECT) ? "effect"
                                                                : "value");
        cJSON *in = cJSON_AddArrayToObject(no, "inputs");
        for (uint32_t j = 0; j < n->n_in; j++) cJSON_AddItemToArray(in, cJSON_CreateNumber(n->in[j]));
        if ((fl & IRF_EFFECT) && n->chain != IR_NONE) cJSON_AddNumberToObject(no, "chain", n->chain);
        else cJSON_AddNullToObject(no, "chain");
        if (fl & IRF_REGION) {
            cJSON *sub = cJSON_AddArrayToObject(no, "subregions");
            for (int k = 0; k < 2; k++)
                if (n->reg[k] != UINT32_MAX) cJSON_AddItemToArray(sub, cJSON_CreateNumber(n->reg[k]));
        }
        if (n->op == IR_CONST || n->op == IR_APPEND_TEXT) cJSON_AddItemToObject(no, "value", json_const(c, n->k));
        switch (n->op) {
        case IR_LOAD: case IR_STORE: case IR_FOR: cJSON_AddNumberToObject(no, "slot", (double)n->i); break;
        case IR_FN_REF: case IR_CALL: case IR_CALL_FRESH:
            cJSON_AddItemToObject(no, "fn", json_str(n->i >= 0 && (uint64_t)n->i < c->n_fns ? c->fns[n->i]->name : "?"));
            break;
        case IR_UNOP: case IR_BINOP: cJSON_AddStringToObject(no, "operator", sgl_op_name((sgl_op)n->i)); break;
        case IR_BUILTIN: case IR_PURE_CALL:
            cJSON_AddStringToObject(no, "builtin", sgl_builtin_name((sgl_builtin)n->i));
            break;
        case IR_APPEND:
            cJSON_AddStringToObject(no, "mode", n->i == SGL_APPEND_STR          ? "str"
                                                : n->i == SGL_APPEND_FMT       ? "fmt"
                                                : n->i == SGL_APPEND_IMAGE     ? "image"
                                                : n->i == SGL_APPEND_VAR_BEGIN ? "var_begin"
                                                : n->i == SGL_APPEND_VAR_END   ? "var_end"
                                                                               : "value");
            break;
        case IR_ROLE_BEGIN: case IR_ROLE_END: cJSON_AddStringToObject(no, "role", sgl_role_name((sgl_role)n->i)); break;
        case IR_JOIN:
            cJSON_AddStringToObject(no, "mode", n->i == SGL_JOIN_GATHER   ? "gather"
                                                : n->i == SGL_JOIN_CONCAT ? "concat"
                                                                          : "dynamic");
            break;
        default: break;
        }
        if (n->site) {
            const ir_site *st = n->site;
            cJSON *so = cJSON_AddObjectToObject(no, "site");
            if (st->name_k >= 0) cJSON_AddItemToObject(so, "name", json_const(c, st->name_k));
            else if (st->name_k == SGL_SITE_DYNAMIC) cJSON_AddStringToObject(so, "name", "<dynamic>");
            else cJSON_AddNullToObject(so, "name");
            cJSON_AddNumberToObject(so, "positional", st->n_pos);
            cJSON *kws = cJSON_AddArrayToObject(so, "kwargs");
            for (uint32_t i = 0; i < st->n_kw; i++) {
                const sgl_kwarg_info *ki = sgl_kwarg_get((sgl_kwarg_id)st->kw_id[i]);
                cJSON *kw = cJSON_CreateObject();
                cJSON_AddItemToObject(kw, "name", json_str(ki ? ki->name : "?"));
                cJSON_AddItemToObject(kw, "value", st->kw_k[i] >= 0 ? json_const(c, st->kw_k[i]) : cJSON_CreateNull());
                cJSON_AddBoolToObject(kw, "dynamic", st->kw_k[i] < 0);
                cJSON_AddItemToArray(kws, kw);
            }
        }
        uint32_t line = 0, col = 0;
        if (n->loc.file < c->prog->n_files) sgl_source_line_col(&c->prog->files[n->loc.file], n->loc.start, &line, &col);
        cJSON_AddNumberToObject(no, "line", line);
        cJSON_AddNumberToObject(no, "col", col);
        cJSON_AddItemToArray(nodes, no);
    }
    return o;
}

static void json_fn_write(const comp *c, const ir_fn *f, FILE *out) {
    cJSON *o = json_fn(c, f);
    char *text = cJSON_PrintUnformatted(o);
    if (text) fputs(text, out);
    cJSON_free(text);
    cJSON_Delete(o);
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

/* How a node kind is drawn; the legend lists the same table. gen and select
 * (the model calls) stand out from the other stream operations. */
typedef struct dot_style {
    const char *what, *shape, *style, *color;
} dot_style;

static const dot_style dot_styles[] = {
    {"gen (model call)", "doubleoctagon", "filled,bold", "gold"},
    {"select (model call)", "invhouse", "filled,bold", "orange"},
    {"stream operation", "box", "filled", "lightblue"},
    {"effect", "box", "filled", "lightpink"},
    {"region (if / for / while)", "hexagon", "filled", "khaki"},
    {"value", "ellipse", "filled", "white"},
};

static const dot_style *dot_style_of(ir_op op, unsigned fl) {
    if (op == IR_GEN) return &dot_styles[0];
    if (op == IR_SELECT) return &dot_styles[1];
    if (fl & IRF_REGION) return &dot_styles[4];
    if (fl & IRF_STREAM) return &dot_styles[2];
    if (fl & IRF_EFFECT) return &dot_styles[3];
    return &dot_styles[5];
}

/* The legend: one sample node per style and one sample edge per edge kind. */
static void dot_legend(FILE *out) {
    fputs("subgraph cluster_legend {\nlabel=\"legend\"; style=dashed; color=gray60; rank=sink;\n", out);
    size_t n = sizeof dot_styles / sizeof dot_styles[0];
    for (size_t i = 0; i < n; i++)
        fprintf(out, "legend_n%zu [label=\"%s\" shape=%s style=\"%s\" fillcolor=%s];\n", i, dot_styles[i].what,
                dot_styles[i].shape, dot_styles[i].style, dot_styles[i].color);
    fputs("legend_a, legend_b, legend_c, legend_d, legend_e, legend_f [label=\"\" shape=point width=0.06];\n"
          "legend_a -> legend_b [label=\"data\"];\n"
          "legend_c -> legend_d [label=\"stream / effect order\" style=dashed color=blue];\n"
          "legend_e -> legend_f [label=\"sub-region\" style=dotted];\n",
          out);
    for (size_t i = 0; i + 1 < n; i++) fprintf(out, "legend_n%zu -> legend_n%zu [style=invis];\n", i, i + 1);
    fputs("}\n", out);
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
        const dot_style *ds = dot_style_of(n->op, fl);
        fprintf(out, "\" shape=%s style=\"%s\" fillcolor=%s];\n", ds->shape, ds->style, ds->color);
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
    if (fmt == COMPILER_GRAPH_DOT) {
        dot_legend(out);
        fputs("}\n", out);
    }
}

void ir_dump_fn(const comp *c, const ir_fn *f, compiler_graph_format fmt, FILE *out, bool first) {
    switch (fmt) {
    case COMPILER_GRAPH_TEXT:
        if (!first) fputc('\n', out);
        text_fn(c, f, out);
        break;
    case COMPILER_GRAPH_JSON:
        if (!first) fputs(",\n", out);
        json_fn_write(c, f, out);
        break;
    case COMPILER_GRAPH_DOT: dot_fn(c, f, out); break;
    }
}
