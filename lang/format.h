/* format.h: Python-style format specifications, as written after ':' in an
 * f-string interpolation ({x:.3f}, {n:>5}) or passed to format(x, spec).
 * The checker parses literal specs to report a located error; the VM parses
 * and applies them at run time (vm/builtins_ext.c).
 *
 *   spec  = [[fill] align] [sign] ["#"] ["0"] [width] ["," | "_"] ["." precision] [type]
 *   align = "<" | ">" | "^" | "="      sign = "+" | "-" | " "
 *   type  = "s" | "d" | "x" | "X" | "o" | "b" | "f" | "F" | "e" | "E" | "g" | "G" | "%"
 */
#ifndef SGL_LANG_FORMAT_H
#define SGL_LANG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sgl_fmt_spec {
    char fill;      /* padding character (default ' ') */
    char align;     /* '<' '>' '^' '=' or 0 (default: '>' for numbers, '<' otherwise) */
    char sign;      /* '+' '-' ' ' or 0 */
    bool alt;       /* '#': 0x/0o/0b prefixes */
    int width;      /* minimum width in bytes, 0 = none */
    char group;     /* ',' or '_' thousands separator, or 0 */
    int precision;  /* -1 = none */
    char type;      /* see above, or 0 */
} sgl_fmt_spec;

/* Parses spec[0..len). Returns 0 with *out filled, or -1 with *bad_at set
 * to the offset of the offending byte and *why to a static message. */
int sgl_fmt_spec_parse(const char *spec, size_t len, sgl_fmt_spec *out, size_t *bad_at, const char **why);

#endif
