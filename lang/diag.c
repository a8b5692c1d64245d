/* diag.c: diagnostics: collecting them on a program, mapping byte offsets
 * to line:col, and rendering `file:line:col: error: message` with the source
 * line and a ^~~~ underline (ANSI colour on request). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang_int.h"

int lang_source_index(sgl_source *s) {
    uint32_t n = 1;
    for (uint32_t i = 0; i < s->len; i++)
        if (s->text[i] == '\n') n++;
    s->line_starts = malloc(n * sizeof *s->line_starts);
    if (!s->line_starts) return -1;
    s->line_starts[0] = 0;
    uint32_t k = 1;
    for (uint32_t i = 0; i < s->len; i++)
        if (s->text[i] == '\n') s->line_starts[k++] = i + 1;
    s->n_lines = n;
    return 0;
}

void sgl_source_line_col(const sgl_source *src, uint32_t offset, uint32_t *line, uint32_t *col) {
    if (!src->line_starts || src->n_lines == 0) {
        *line = 1;
        *col = offset + 1;
        return;
    }
    if (offset > src->len) offset = src->len;
    uint32_t lo = 0, hi = src->n_lines; /* find the last line start <= offset */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (src->line_starts[mid] <= offset)
            lo = mid;
        else
            hi = mid;
    }
    *line = lo + 1;
    *col = offset - src->line_starts[lo] + 1;
}

sgl_diag *lang_vdiag(sgl_program *p, sgl_diag_level level, bool has_loc, sgl_loc loc, const char *fmt,
                     va_list ap) {
    sgl_diags *d = &p->diags;
    int max = p->opts.max_errors > 0 ? p->opts.max_errors : 100;
    if (level == SGL_DIAG_ERROR && d->n_errors >= max) {
        d->n_errors++;
        return NULL;
    }
    if (level == SGL_DIAG_NOTE && d->n_errors > max) return NULL;
    if (d->len == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        sgl_diag *items = realloc(d->items, cap * sizeof *items);
        if (!items) return NULL;
        d->items = items;
        d->cap = cap;
    }
    sgl_strbuf sb = {0};
    if (sgl_strbuf_vprintf(&sb, fmt, ap)) return NULL;
    sgl_diag *e = &d->items[d->len++];
    e->level = level;
    e->has_loc = has_loc;
    e->loc = loc;
    e->msg = sgl_strbuf_take(&sb);
    if (level == SGL_DIAG_ERROR) d->n_errors++;
    if (level == SGL_DIAG_WARNING) d->n_warnings++;
    return e;
}

sgl_diag *sgl_diag_add(sgl_program *p, sgl_diag_level level, sgl_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sgl_diag *d = lang_vdiag(p, level, true, loc, fmt, ap);
    va_end(ap);
    return d;
}

sgl_loc lang_loc_make(const lang_parser *P, lang_loc l) {
    return (sgl_loc){P->file, l.start, l.end};
}

sgl_diag *lang_error(lang_parser *P, lang_loc l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sgl_diag *d = lang_vdiag(P->prog, SGL_DIAG_ERROR, true, lang_loc_make(P, l), fmt, ap);
    va_end(ap);
    return d;
}

/* Colours: bold location, red error, magenta warning, cyan note, green caret. */
#define C_BOLD "\033[1m"
#define C_RED "\033[1;31m"
#define C_MAG "\033[1;35m"
#define C_CYAN "\033[1;36m"
#define C_GREEN "\033[1;32m"
#define C_OFF "\033[0m"

static void print_one(const sgl_program *p, const sgl_diag *d, FILE *out, bool color) {
    static const char *const names[] = {"error", "warning", "note"};
    static const char *const colors[] = {C_RED, C_MAG, C_CYAN};
    const sgl_source *src = d->has_loc && d->loc.file < p->n_files ? &p->files[d->loc.file] : NULL;
    uint32_t line = 0, col = 0;
    if (src) {
        sgl_source_line_col(src, d->loc.start, &line, &col);
        fprintf(out, "%s%s:%u:%u:%s ", color ? C_BOLD : "", src->path, line, col, color ? C_OFF : "");
    }
    fprintf(out, "%s%s:%s %s%s%s\n", color ? colors[d->level] : "", names[d->level], color ? C_OFF : "",
            color ? C_BOLD : "", d->msg, color ? C_OFF : "");
    if (!src || !src->line_starts) return;

    uint32_t ls = src->line_starts[line - 1];
    uint32_t le = ls;
    while (le < src->len && src->text[le] != '\n') le++;
    uint32_t start = d->loc.start > src->len ? src->len : d->loc.start;
    uint32_t end = d->loc.end < start ? start : d->loc.end;
    if (end > le) end = le; /* underline only the first line of a range */
    /* Very long lines are shown as a window around the start column. */
    enum { WIN = 80 };
    uint32_t vs = ls, ve = le;
    bool cut_l = false, cut_r = false;
    if (le - ls > 2 * WIN) {
        if (start > ls + WIN / 2) {
            vs = start - WIN / 2;
            while (vs < start && (src->text[vs] & 0xC0) == 0x80) vs++;
            cut_l = true;
        }
        if (ve > vs + 2 * WIN) {
            ve = vs + 2 * WIN;
            while (ve > vs && (src->text[ve] & 0xC0) == 0x80) ve--;
            cut_r = true;
        }
        if (end > ve) end = ve;
    }
    /* Gutter width follows the line number. */
    char num[16];
    int w = snprintf(num, sizeof num, "%u", line);
    if (w < 4) w = 4;
    fprintf(out, "%*u | %s", w, line, cut_l ? "..." : "");
    for (uint32_t i = vs; i < ve; i++) {
        unsigned char c = (unsigned char)src->text[i];
        fputc(c == '\t' || (c >= 32 && c != 127) ? c : ' ', out);
    }
    fputs(cut_r ? "...\n" : "\n", out);
    fprintf(out, "%*s | %s", w, "", cut_l ? "   " : "");
    /* Pad with the same whitespace, one column per UTF-8 character. */
    for (uint32_t i = vs; i < start; i++) {
        unsigned char c = (unsigned char)src->text[i];
        if ((c & 0xC0) == 0x80) continue;
        fputc(c == '\t' ? '\t' : ' ', out);
    }
    if (color) fputs(C_GREEN, out);
    fputc('^', out);
    for (uint32_t i = start + 1; i < end; i++) {
        unsigned char c = (unsigned char)src->text[i];
        if ((c & 0xC0) == 0x80) continue;
        fputc('~', out);
    }
    if (color) fputs(C_OFF, out);
    fputc('\n', out);
}

void sgl_diags_print(const sgl_program *p, FILE *out, bool color) {
    if (!p) return;
    for (size_t i = 0; i < p->diags.len; i++) print_one(p, &p->diags.items[i], out, color);
    int max = p->opts.max_errors > 0 ? p->opts.max_errors : 100;
    if (p->diags.n_errors > max)
        fprintf(out, "%s: too many errors (%d more not shown)\n", "sglc", p->diags.n_errors - max);
}
