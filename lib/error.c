/* error.c: libsglc's structured errors (sglc_error), their JSON form, and
 * the small helpers the other sources share. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "lib/internal.h"

const char *sglc_status_kind(sglc_status s) {
    switch (s) {
    case SGLC_OK: return "ok";
    case SGLC_ERR_USAGE: return "usage";
    case SGLC_ERR_COMPILE: return "compile";
    case SGLC_ERR_RUNTIME: return "runtime";
    case SGLC_ERR_ENGINE: return "engine";
    case SGLC_ERR_MEMORY: return "memory";
    }
    return "unknown";
}

void sglc_error_clear(sglc_error *err) {
    if (!err) return;
    memset(err, 0, sizeof *err);
    snprintf(err->kind, sizeof err->kind, "%s", sglc_status_kind(SGLC_OK));
}

sglc_status sglc_error_set(sglc_error *err, sglc_status status, const char *fmt, ...) {
    if (!err) return status;
    sglc_error_clear(err);
    err->status = status;
    snprintf(err->kind, sizeof err->kind, "%s", sglc_status_kind(status));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return status;
}

char *sglc_error_json(const sglc_error *err) {
    cJSON *doc = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(doc, "error");
    if (!e) {
        cJSON_Delete(doc);
        return NULL;
    }
    cJSON_AddStringToObject(e, "message", err ? err->message : "");
    if (err && err->file[0]) cJSON_AddStringToObject(e, "file", err->file);
    else cJSON_AddNullToObject(e, "file");
    if (err && err->line > 0) {
        cJSON_AddNumberToObject(e, "line", err->line);
        cJSON_AddNumberToObject(e, "col", err->col);
    } else {
        cJSON_AddNullToObject(e, "line");
        cJSON_AddNullToObject(e, "col");
    }
    cJSON_AddStringToObject(e, "kind", err ? err->kind : "usage");
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return s;
}

const char *sglc_version(void) {
#ifdef SGL_VERSION
    return SGL_VERSION;
#else
    return "unknown";
#endif
}

void sglc_free(void *p) {
    free(p);
}

int sglc_strlist_add(sglc_strlist *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        char **items = realloc(l->items, cap * sizeof *items);
        if (!items) return -1;
        l->items = items;
        l->cap = cap;
    }
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) return -1;
    memcpy(d, s, n);
    l->items[l->n++] = d;
    return 0;
}

void sglc_strlist_free(sglc_strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}
