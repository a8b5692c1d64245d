/* format.c: the format-specification parser of format.h. */
#include "lang/format.h"

#include <string.h>

static bool is_align(char c) { return c == '<' || c == '>' || c == '^' || c == '='; }

int sgl_fmt_spec_parse(const char *spec, size_t len, sgl_fmt_spec *out, size_t *bad_at, const char **why) {
    sgl_fmt_spec f = {.fill = ' ', .precision = -1};
    size_t i = 0;
    if (len >= 2 && is_align(spec[1]) && spec[0] != '{' && spec[0] != '}') {
        f.fill = spec[0];
        f.align = spec[1];
        i = 2;
    } else if (len >= 1 && is_align(spec[0])) {
        f.align = spec[0];
        i = 1;
    }
    if (i < len && (spec[i] == '+' || spec[i] == '-' || spec[i] == ' ')) f.sign = spec[i++];
    if (i < len && spec[i] == '#') f.alt = true, i++;
    if (i < len && spec[i] == '0') {
        if (!f.align) {
            f.fill = '0';
            f.align = '=';
        }
        i++;
    }
    while (i < len && spec[i] >= '0' && spec[i] <= '9') {
        if (f.width > 1000) {
            *bad_at = i;
            *why = "width too large (at most 1000)";
            return -1;
        }
        f.width = f.width * 10 + (spec[i++] - '0');
    }
    if (i < len && (spec[i] == ',' || spec[i] == '_')) f.group = spec[i++];
    if (i < len && spec[i] == '.') {
        size_t dot = i++;
        if (i >= len || spec[i] < '0' || spec[i] > '9') {
            *bad_at = dot;
            *why = "'.' must be followed by a precision (digits)";
            return -1;
        }
        f.precision = 0;
        while (i < len && spec[i] >= '0' && spec[i] <= '9') {
            if (f.precision > 100) {
                *bad_at = i;
                *why = "precision too large (at most 100)";
                return -1;
            }
            f.precision = f.precision * 10 + (spec[i++] - '0');
        }
    }
    if (i < len) {
        if (strchr("sdxXobfFeEgG%", spec[i]) && spec[i]) f.type = spec[i++];
        else {
            *bad_at = i;
            *why = "unknown format type (use s, d, x, X, o, b, f, F, e, E, g, G or %)";
            return -1;
        }
    }
    if (i < len) {
        *bad_at = i;
        *why = "unexpected character after the format type";
        return -1;
    }
    if (f.type == 's' && (f.sign || f.alt || f.group)) {
        *bad_at = 0;
        *why = "sign, '#' and grouping do not apply to strings ('s')";
        return -1;
    }
    if (f.precision >= 0 && strchr("dxXob", f.type) && f.type) {
        *bad_at = 0;
        *why = "precision is not allowed with an integer type";
        return -1;
    }
    *out = f;
    return 0;
}
