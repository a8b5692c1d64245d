/* util: the small shared toolkit every module uses: error records, growable
 * string buffers, arenas and file reading. Library code reports failure by
 * returning a status and filling an sgl_error; it never exits or aborts.
 */
#ifndef SGL_UTIL_H
#define SGL_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SGL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SGL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SGL_MAX(a, b) ((a) > (b) ? (a) : (b))

#if defined(__GNUC__)
#define SGL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SGL_PRINTF(f, a)
#endif

/* ---- errors ------------------------------------------------------------ */

/* An error record filled by a failing library call. Callers own it (usually
 * on the stack); a NULL sgl_error* is allowed everywhere and means "don't
 * care". Functions return 0 on success and -1 on failure unless they say
 * otherwise. */
typedef struct sgl_error {
    char msg[1024];
} sgl_error;

/* Formats msg into err (if non-NULL). Always returns -1 so callers can write
 * `return sgl_error_set(err, "...")`. */
int sgl_error_set(sgl_error *err, const char *fmt, ...) SGL_PRINTF(2, 3);
/* Prepends "prefix: " to an existing message. Returns -1. */
int sgl_error_prefix(sgl_error *err, const char *fmt, ...) SGL_PRINTF(2, 3);

/* ---- string buffer ------------------------------------------------------ */

/* Growable NUL-terminated byte buffer. Zero-initialise ({0}) to start; the
 * buffer owns `data` until sgl_strbuf_free or sgl_strbuf_take. Appends return
 * 0, or -1 when memory runs out (the buffer is left as it was). */
typedef struct sgl_strbuf {
    char *data;
    size_t len;
    size_t cap;
} sgl_strbuf;

int sgl_strbuf_reserve(sgl_strbuf *sb, size_t extra);
int sgl_strbuf_append(sgl_strbuf *sb, const char *s, size_t n);
int sgl_strbuf_puts(sgl_strbuf *sb, const char *s);
int sgl_strbuf_putc(sgl_strbuf *sb, char c);
int sgl_strbuf_printf(sgl_strbuf *sb, const char *fmt, ...) SGL_PRINTF(2, 3);
int sgl_strbuf_vprintf(sgl_strbuf *sb, const char *fmt, va_list ap);
void sgl_strbuf_clear(sgl_strbuf *sb);
void sgl_strbuf_free(sgl_strbuf *sb);
/* Returns the data (caller frees; never NULL: "" when empty, or NULL only if
 * allocation fails) and resets the buffer. */
char *sgl_strbuf_take(sgl_strbuf *sb);

/* ---- arena -------------------------------------------------------------- */

/* Bump allocator for phase-lifetime data (AST, IR). Everything allocated from
 * an arena is freed at once by sgl_arena_free. Zero-initialise to start. */
typedef struct sgl_arena_chunk sgl_arena_chunk;
typedef struct sgl_arena {
    sgl_arena_chunk *head;
    size_t total;
} sgl_arena;

/* Returns zeroed memory aligned to 16 bytes owned by the arena, or NULL when
 * memory runs out. */
void *sgl_arena_alloc(sgl_arena *a, size_t n);
/* Returns an arena-owned NUL-terminated copy of s[0..n), or NULL. */
char *sgl_arena_strndup(sgl_arena *a, const char *s, size_t n);
void sgl_arena_free(sgl_arena *a);

/* ---- misc --------------------------------------------------------------- */

/* Reads a whole file. Returns a malloc'd NUL-terminated buffer (caller frees)
 * and its length in *len, or NULL with err set. */
char *sgl_read_file(const char *path, size_t *len, sgl_error *err);
/* Returns a malloc'd copy (caller frees) or NULL. */
char *sgl_strdup(const char *s);
char *sgl_strndup(const char *s, size_t n);
/* Monotonic clock in seconds. */
double sgl_now(void);

#endif
