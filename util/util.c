/* util: error records, string buffers, arenas, file reading (see util.h). */
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sgl_error_set(sgl_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int sgl_error_prefix(sgl_error *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        size_t n = strlen(prefix);
        if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
        memcpy(err->msg, prefix, n);
        memcpy(err->msg + n, ": ", 2);
        size_t rest = sizeof err->msg - n - 3;
        size_t m = strnlen(old, rest);
        memcpy(err->msg + n + 2, old, m);
        err->msg[n + 2 + m] = 0;
    }
    return -1;
}

int sgl_strbuf_reserve(sgl_strbuf *sb, size_t extra) {
    if (sb->len + extra + 1 <= sb->cap) return 0;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < sb->len + extra + 1) cap *= 2;
    char *p = realloc(sb->data, cap);
    if (!p) return -1;
    sb->data = p;
    sb->cap = cap;
    return 0;
}

int sgl_strbuf_append(sgl_strbuf *sb, const char *s, size_t n) {
    if (sgl_strbuf_reserve(sb, n)) return -1;
    if (n) memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = 0;
    return 0;
}

int sgl_strbuf_puts(sgl_strbuf *sb, const char *s) {
    return sgl_strbuf_append(sb, s, strlen(s));
}

int sgl_strbuf_putc(sgl_strbuf *sb, char c) {
    return sgl_strbuf_append(sb, &c, 1);
}

int sgl_strbuf_vprintf(sgl_strbuf *sb, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || sgl_strbuf_reserve(sb, (size_t)n)) return -1;
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    sb->len += (size_t)n;
    return 0;
}

int sgl_strbuf_printf(sgl_strbuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = sgl_strbuf_vprintf(sb, fmt, ap);
    va_end(ap);
    return r;
}

void sgl_strbuf_clear(sgl_strbuf *sb) {
    sb->len = 0;
    if (sb->data) sb->data[0] = 0;
}

void sgl_strbuf_free(sgl_strbuf *sb) {
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}

char *sgl_strbuf_take(sgl_strbuf *sb) {
    char *p = sb->data ? sb->data : sgl_strdup("");
    sb->data = NULL;
    sb->len = sb->cap = 0;
    return p;
}

struct sgl_arena_chunk {
    sgl_arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

void *sgl_arena_alloc(sgl_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    sgl_arena_chunk *c = a->head;
    if (!c || c->used + n > c->cap) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

char *sgl_arena_strndup(sgl_arena *a, const char *s, size_t n) {
    char *p = sgl_arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void sgl_arena_free(sgl_arena *a) {
    sgl_arena_chunk *c = a->head;
    while (c) {
        sgl_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

char *sgl_read_file(const char *path, size_t *len, sgl_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sgl_error_set(err, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    sgl_strbuf sb = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (sgl_strbuf_append(&sb, buf, n)) {
            fclose(f);
            sgl_strbuf_free(&sb);
            sgl_error_set(err, "out of memory reading '%s'", path);
            return NULL;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        sgl_strbuf_free(&sb);
        sgl_error_set(err, "error reading '%s'", path);
        return NULL;
    }
    if (len) *len = sb.len;
    return sgl_strbuf_take(&sb);
}

char *sgl_strdup(const char *s) {
    return sgl_strndup(s, strlen(s));
}

char *sgl_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

double sgl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
