/* json: request-body field checks (unknown names and wrong types are
 * reported with the field's full path, e.g. "sampling_params.temperature")
 * and reply strings that are valid UTF-8 whatever bytes the model produced.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/unicode.h"
#include "server/internal.h"

/* Beyond 2^53 a double no longer holds every integer, so a number literal
 * of the body that is an integer that large keeps its exact text on its
 * node, in valuestring (NULL for numbers otherwise; cJSON_Delete frees it
 * whatever the type). The body's number literals, in text order, are its
 * tree's number nodes in depth-first order. */
static void exact_walk(cJSON *n, const char **pos, const char *end) {
    for (; n; n = n->next) {
        if (cJSON_IsNumber(n)) {
            /* the next number literal outside strings */
            const char *p = *pos;
            while (p < end && *p != '-' && !(*p >= '0' && *p <= '9')) {
                if (*p == '"') {
                    for (p++; p < end && *p != '"'; p++)
                        if (*p == '\\') p++;
                }
                p++;
            }
            const char *q = p;
            bool integral = true;
            while (q < end && strchr("+-0123456789.eE", *q)) {
                if (strchr(".eE", *q)) integral = false;
                q++;
            }
            *pos = q;
            if (integral && fabs(n->valuedouble) > 9007199254740992.0 && q - p < 32 && !n->valuestring)
                n->valuestring = sgl_strndup(p, (size_t)(q - p));
        }
        if (n->child) exact_walk(n->child, pos, end);
    }
}

void srv_json_keep_exact(cJSON *root, const char *text, size_t len) {
    const char *pos = text;
    if (root) exact_walk(root, &pos, text + len);
}

int srv_json_int64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    if (j->valuestring) {
        char *end = NULL;
        errno = 0;
        if (j->valuestring[0] == '-') {
            long long v = strtoll(j->valuestring, &end, 10);
            *out = (uint64_t)v;
        } else {
            *out = (uint64_t)strtoull(j->valuestring, &end, 10);
        }
        return errno || !end || *end ? -1 : 0;
    }
    if (!srv_json_is_int(j)) return -1;
    *out = (uint64_t)(int64_t)j->valuedouble;
    return 0;
}

bool srv_json_is_int(const cJSON *j) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    return isfinite(v) && v == floor(v) && fabs(v) <= 9007199254740992.0;
}

static const char *type_words(unsigned t, char *buf, size_t cap) {
    static const struct { unsigned bit; const char *word; } names[] = {
        {J_NULL, "null"}, {J_BOOL, "boolean"}, {J_INT, "integer"}, {J_INT64, "64-bit integer"},
        {J_NUM, "number"},
        {J_STR, "string"}, {J_ARR, "array"},   {J_OBJ, "object"},
    };
    buf[0] = 0;
    for (size_t i = 0; i < SGL_ARRAY_LEN(names); i++) {
        if (!(t & names[i].bit)) continue;
        if (names[i].bit == J_INT && (t & J_NUM)) continue;
        if (buf[0]) strncat(buf, " or ", cap - strlen(buf) - 1);
        strncat(buf, names[i].word, cap - strlen(buf) - 1);
    }
    return buf;
}

static bool type_ok(const cJSON *v, unsigned t) {
    if (cJSON_IsNull(v)) return t & J_NULL;
    if (cJSON_IsBool(v)) return t & J_BOOL;
    uint64_t u;
    if (cJSON_IsNumber(v))
        return (t & J_NUM) || ((t & J_INT) && srv_json_is_int(v)) || ((t & J_INT64) && srv_json_int64(v, &u) == 0);
    if (cJSON_IsString(v)) return t & J_STR;
    if (cJSON_IsArray(v)) return t & J_ARR;
    if (cJSON_IsObject(v)) return t & J_OBJ;
    return false;
}

int srv_check_fields(const cJSON *obj, const srv_field *fields, size_t n, const char *prefix,
                     char *bad, size_t bad_cap, sgl_error *err) {
    char path[256];
    if (!cJSON_IsObject(obj)) {
        snprintf(bad, bad_cap, "%s", prefix && *prefix ? prefix : "body");
        return sgl_error_set(err, "%s must be a JSON object", prefix && *prefix ? prefix : "the body");
    }
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        snprintf(path, sizeof path, "%s%s%s", prefix ? prefix : "", prefix && *prefix ? "." : "", name);
        size_t k = 0;
        while (k < n && strcmp(fields[k].name, name)) k++;
        if (k == n) {
            snprintf(bad, bad_cap, "%s", path);
            return sgl_error_set(err, "unknown field '%s'", path);
        }
        if (!type_ok(c, fields[k].types)) {
            char want[96];
            snprintf(bad, bad_cap, "%s", path);
            return sgl_error_set(err, "field '%s' must be %s", path,
                                 type_words(fields[k].types, want, sizeof want));
        }
        for (const cJSON *o = c->next; o; o = o->next)
            if (o->string && !strcmp(o->string, name)) {
                snprintf(bad, bad_cap, "%s", path);
                return sgl_error_set(err, "field '%s' is given twice", path);
            }
    }
    return 0;
}

cJSON *srv_json_str(const char *s, size_t n) {
    char *f = uni_utf8_cstr(s ? s : "", s ? n : 0);
    cJSON *j = f ? cJSON_CreateString(f) : NULL;
    free(f);
    return j;
}
