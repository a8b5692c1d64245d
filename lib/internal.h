/* internal.h: what libsglc's sources share and the sglc executable uses
 * beside the public header (never installed). */
#ifndef SGLC_LIB_INTERNAL_H
#define SGLC_LIB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "include/sglc/sglc.h"

#if defined(__GNUC__)
#define SGLC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SGLC_PRINTF(f, a)
#endif

/* Fills err (when non-NULL) with status, its kind word and the message;
 * clears the location and trace. Returns status. */
sglc_status sglc_error_set(sglc_error *err, sglc_status status, const char *fmt, ...)
    SGLC_PRINTF(3, 4);
/* Clears err to SGLC_OK (NULL ok). */
void sglc_error_clear(sglc_error *err);
/* "usage", "compile", ... for a status. */
const char *sglc_status_kind(sglc_status s);

/* A growable list of malloc'd strings (zero-initialise; owns its items). */
typedef struct sglc_strlist {
    char **items;
    size_t n, cap;
} sglc_strlist;
/* Appends a copy of s. Returns 0, or -1 when memory runs out. */
int sglc_strlist_add(sglc_strlist *l, const char *s);
void sglc_strlist_free(sglc_strlist *l);

/* The source tree of an uninstalled (build-folder) binary, from the marker
 * meson writes beside it, into out[cap]. Returns 0, or -1 when this binary
 * is installed (no marker). */
int sglc_source_root(char *out, size_t cap);

#endif
