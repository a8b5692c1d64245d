/* builtins.c: the plain builtins of docs/language.md §9 and the regex
 * dialect matcher (translated to POSIX ERE). See builtins.h.
 */
#include "vm/builtins.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef SGL_HAVE_CURL
#include <curl/curl.h>
#endif

/* ---- regex dialect -> POSIX ERE ------------------------------------------------ */

/* Appends the class body (without brackets) for a \d-style shorthand. */
static const char *shorthand(char c) {
    switch (c) {
    case 'd': return "0-9";
    case 'w': return "A-Za-z0-9_";
    case 's': return " \t\n\r\f\v";
    default: return NULL;
    }
}

static char escape_char(char c) {
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    default: return c;
    }
}

/* Writes c so that it is literal inside a bracket expression. */
static void class_literal(sgl_strbuf *sb, char c) {
    /* ']' and '^' and '-' are placed safely by writing them as ranges. */
    if (c == ']' || c == '^' || c == '-' || c == '[') sgl_strbuf_printf(sb, "%c-%c", c, c);
    else sgl_strbuf_putc(sb, c);
}

static int translate(const char *p, bool anchored, sgl_strbuf *sb, sgl_error *err) {
    sgl_strbuf_puts(sb, anchored ? "^(" : "(");
    while (*p) {
        char c = *p++;
        if (c == '\\') {
            char e = *p++;
            if (!e) return sgl_error_set(err, "regex ends with a backslash");
            const char *cls = shorthand((char)(e | 0x20));
            if (cls && (e == 'd' || e == 'w' || e == 's' || e == 'D' || e == 'W' || e == 'S')) {
                sgl_strbuf_printf(sb, "[%s%s]", (e >= 'A' && e <= 'Z') ? "^" : "", cls);
            } else {
                sgl_strbuf_putc(sb, '[');
                class_literal(sb, escape_char(e));
                sgl_strbuf_putc(sb, ']');
            }
        } else if (c == '[') {
            sgl_strbuf_putc(sb, '[');
            if (*p == '^') {
                sgl_strbuf_putc(sb, '^');
                p++;
            }
            /* Collect members; '-' between two members is a range. */
            bool first = true;
            while (*p && *p != ']') {
                char m = *p++;
                if (m == '\\') {
                    char e = *p++;
                    const char *cls = (e == 'd' || e == 'w' || e == 's') ? shorthand(e) : NULL;
                    if (cls) sgl_strbuf_puts(sb, cls);
                    else if (e == 'D' || e == 'W' || e == 'S')
                        return sgl_error_set(err, "negated shorthand \\%c inside a class is not supported", e);
                    else class_literal(sb, escape_char(e));
                } else if (m == '-' && !first && *p && *p != ']') {
                    /* Range: rewrite the previous literal as its start. */
                    char hi = *p++;
                    if (hi == '\\') hi = escape_char(*p++);
                    sgl_strbuf_putc(sb, '-');
                    sgl_strbuf_putc(sb, hi);
                } else if (m == '-') {
                    sgl_strbuf_puts(sb, "---");
                } else if (m == '^' || m == '[' || m == ']') {
                    class_literal(sb, m);
                } else {
                    sgl_strbuf_putc(sb, m);
                }
                first = false;
            }
            if (*p != ']') return sgl_error_set(err, "unterminated character class");
            p++;
            sgl_strbuf_putc(sb, ']');
        } else if (c == '(' && p[0] == '?' && p[1] == ':') {
            sgl_strbuf_putc(sb, '(');
            p += 2;
        } else if (c == '.') {
            sgl_strbuf_puts(sb, "[^\n]");
        } else if (c == '(' && *p == ')') {
            sgl_strbuf_puts(sb, "()");
            p++;
        } else {
            sgl_strbuf_putc(sb, c);
        }
    }
    sgl_strbuf_puts(sb, anchored ? ")$" : ")");
    return 0;
}

static int regex_build(const char *pattern, bool anchored, int cflags, regex_t *re, sgl_error *err) {
    sgl_strbuf sb = {0};
    if (translate(pattern, anchored, &sb, err) < 0) {
        sgl_strbuf_free(&sb);
        return -1;
    }
    int rc = regcomp(re, sb.data, REG_EXTENDED | cflags);
    sgl_strbuf_free(&sb);
    if (rc != 0) {
        char buf[256];
        regerror(rc, re, buf, sizeof buf);
        regfree(re);
        return sgl_error_set(err, "invalid regex: %s", buf);
    }
    return 0;
}

int vm_regex_compile(const char *pattern, bool anchored, regex_t *re, sgl_error *err) {
    return regex_build(pattern, anchored, 0, re, err);
}

int vm_regex_match(const char *pattern, const char *text, size_t text_len, sgl_error *err) {
    regex_t re;
    if (regex_build(pattern, true, REG_NOSUB, &re, err) < 0) return -1;
    if (memchr(text, 0, text_len)) {
        regfree(&re);
        return 0; /* POSIX matching stops at NUL: such text cannot match whole */
    }
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    return rc == 0 ? 1 : 0;
}

/* ---- helpers ----------------------------------------------------------------------- */

static int want(const char *fn, vm_value v, vm_type t, int i, sgl_error *err) {
    if (v.type == t) return 0;
    return sgl_error_set(err, "%s(): argument %d must be %s, not %s", fn, i + 1, vm_type_name(t),
                         vm_type_name(v.type));
}

static int to_int(vm_value v, vm_value *out, sgl_error *err) {
    switch (v.type) {
    case VM_INT: *out = v; return 0;
    case VM_BOOL: *out = vm_int(v.as.b); return 0;
    case VM_FLOAT:
        if (!isfinite(v.as.f) || fabs(v.as.f) >= 9.2233720368547758e18)
            return sgl_error_set(err, "int(): %g cannot be converted to int", v.as.f);
        *out = vm_int((int64_t)v.as.f);
        return 0;
    case VM_STR: {
        const char *s = vm_str_cstr(v);
        while (*s == ' ' || *s == '\t' || *s == '\n') s++;
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        if (end == s || *end || errno || (size_t)(end - vm_str_cstr(v)) != vm_str_len(v))
        {
            char q[VM_QUOTE_CAP];
            return sgl_error_set(err, "int(): invalid integer literal %s",
                                 vm_quote_buf(q, sizeof q, vm_str_cstr(v), vm_str_len(v), 60));
        }
        *out = vm_int(x);
        return 0;
    }
    default: return sgl_error_set(err, "int(): cannot convert %s to int", vm_type_name(v.type));
    }
}

static int to_float(vm_value v, vm_value *out, sgl_error *err) {
    switch (v.type) {
    case VM_FLOAT: *out = v; return 0;
    case VM_INT: *out = vm_float((double)v.as.i); return 0;
    case VM_BOOL: *out = vm_float(v.as.b); return 0;
    case VM_STR: {
        const char *s = vm_str_cstr(v);
        char *end;
        errno = 0;
        double x = strtod(s, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        if (end == s || *end || (size_t)(end - s) != vm_str_len(v))
        {
            char q[VM_QUOTE_CAP];
            return sgl_error_set(err, "float(): invalid number %s", vm_quote_buf(q, sizeof q, s, vm_str_len(v), 60));
        }
        *out = vm_float(x);
        return 0;
    }
    default: return sgl_error_set(err, "float(): cannot convert %s to float", vm_type_name(v.type));
    }
}

static int range_list(const vm_value *args, uint32_t n, vm_value *out, sgl_error *err) {
    int64_t a[3] = {0, 0, 0};
    for (uint32_t i = 0; i < n; i++) {
        if (args[i].type != VM_INT)
            return sgl_error_set(err, "range(): arguments must be int, not %s", vm_type_name(args[i].type));
        a[i] = args[i].as.i;
    }
    int64_t start = n == 1 ? 0 : a[0], stop = n == 1 ? a[0] : a[1], step = n == 3 ? a[2] : 1;
    if (step == 0) return sgl_error_set(err, "range(): step must not be zero");
    double count = step > 0 ? ceil(((double)stop - (double)start) / (double)step)
                            : ceil(((double)start - (double)stop) / (double)-step);
    if (count < 0) count = 0;
    if (count > 1e7) return sgl_error_set(err, "range(): %.0f items is too many (limit 10000000)", count);
    vm_value l = vm_list_new((uint32_t)count);
    if (l.type != VM_LIST) return sgl_error_set(err, "out of memory");
    for (int64_t i = 0, x = start; i < (int64_t)count; i++, x += step) vm_list_push(l, vm_int(x));
    *out = l;
    return 0;
}

static int run_shell(const char *cmd, vm_value *out, sgl_error *err) {
    int po[2], pe[2];
    if (pipe(po) < 0 || pipe(pe) < 0) return sgl_error_set(err, "shell(): pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return sgl_error_set(err, "shell(): fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    sgl_strbuf so = {0}, se = {0};
    /* Read stdout fully, then stderr: fine for modest outputs (stderr beyond
     * the pipe buffer would stall, so stdout/stderr are read alternately). */
    int fds[2] = {po[0], pe[0]};
    sgl_strbuf *bufs[2] = {&so, &se};
    bool open_[2] = {true, true};
    while (open_[0] || open_[1]) {
        fd_set rd;
        FD_ZERO(&rd);
        int mx = -1;
        for (int i = 0; i < 2; i++)
            if (open_[i]) {
                FD_SET(fds[i], &rd);
                if (fds[i] > mx) mx = fds[i];
            }
        if (select(mx + 1, &rd, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (!open_[i] || !FD_ISSET(fds[i], &rd)) continue;
            char buf[4096];
            ssize_t k = read(fds[i], buf, sizeof buf);
            if (k <= 0) {
                open_[i] = false;
                close(fds[i]);
            } else {
                sgl_strbuf_append(bufs[i], buf, (size_t)k);
            }
        }
    }
    int status = 0;
    waitpid(pid, &status, 0);
    vm_value m = vm_map_new();
    vm_map_set_cstr(m, "status", vm_int(WIFEXITED(status) ? WEXITSTATUS(status) : -1), NULL);
    vm_map_set_cstr(m, "stdout", vm_str_take(&so), NULL);
    vm_map_set_cstr(m, "stderr", vm_str_take(&se), NULL);
    *out = m;
    return 0;
}

#ifdef SGL_HAVE_CURL
static size_t curl_sink(char *p, size_t sz, size_t n, void *ud) {
    sgl_strbuf_append(ud, p, sz * n);
    return sz * n;
}
#endif

static int http(const char *fn, const char *url, const vm_value *body, vm_value *out, sgl_error *err) {
#ifdef SGL_HAVE_CURL
    CURL *c = curl_easy_init();
    if (!c) return sgl_error_set(err, "%s(): curl init failed", fn);
    sgl_strbuf resp = {0}, payload = {0};
    struct curl_slist *hdrs = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (body) {
        if (body->type == VM_STR) {
            sgl_strbuf_append(&payload, vm_str_cstr(*body), vm_str_len(*body));
        } else {
            if (vm_json_dump(&payload, *body, true, err) < 0) {
                curl_easy_cleanup(c);
                return -1;
            }
            hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        }
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload.data ? payload.data : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)payload.len);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    sgl_strbuf_free(&payload);
    if (rc != CURLE_OK) {
        sgl_strbuf_free(&resp);
        return sgl_error_set(err, "%s(%s): %s", fn, url, curl_easy_strerror(rc));
    }
    *out = vm_str_take(&resp);
    return 0;
#else
    (void)url;
    (void)body;
    (void)out;
    return sgl_error_set(err, "%s(): this sglc was built without libcurl", fn);
#endif
}

/* ---- dispatch ------------------------------------------------------------------------- */

int vm_builtin_plain(sgl_builtin b, const vm_value *args, uint32_t n, FILE *out, bool allow_io,
                     vm_value *res, sgl_error *err) {
    *res = vm_none();
    switch (b) {
    case SGL_BUILTIN_PRINT: {
        sgl_strbuf sb = {0};
        for (uint32_t i = 0; i < n; i++) {
            if (i) sgl_strbuf_putc(&sb, ' ');
            vm_str_append(&sb, args[i]);
        }
        sgl_strbuf_putc(&sb, '\n');
        fwrite(sb.data, 1, sb.len, out ? out : stdout);
        fflush(out ? out : stdout);
        sgl_strbuf_free(&sb);
        return 0;
    }
    case SGL_BUILTIN_LEN: {
        int64_t len;
        if (vm_len(args[0], &len, err) < 0) return sgl_error_prefix(err, "len()");
        *res = vm_int(len);
        return 0;
    }
    case SGL_BUILTIN_STR:
        *res = vm_to_str(args[0]);
        return res->type == VM_STR ? 0 : sgl_error_set(err, "out of memory");
    case SGL_BUILTIN_INT: return to_int(args[0], res, err);
    case SGL_BUILTIN_FLOAT: return to_float(args[0], res, err);
    case SGL_BUILTIN_RANGE: return range_list(args, n, res, err);
    case SGL_BUILTIN_KEYS: {
        if (want("keys", args[0], VM_MAP, 0, err) < 0) return -1;
        vm_value l = vm_list_new(vm_map_len(args[0]));
        for (uint32_t i = 0; i < vm_map_len(args[0]); i++)
            vm_list_push(l, vm_retain(args[0].as.m->entries[i].key));
        *res = l;
        return 0;
    }
    case SGL_BUILTIN_JSON_PARSE:
        if (want("json_parse", args[0], VM_STR, 0, err) < 0) return -1;
        if (vm_json_parse(vm_str_cstr(args[0]), vm_str_len(args[0]), res, err) < 0)
            return sgl_error_prefix(err, "json_parse()");
        return 0;
    case SGL_BUILTIN_JSON_DUMP: {
        sgl_strbuf sb = {0};
        if (vm_json_dump(&sb, args[0], true, err) < 0) {
            sgl_strbuf_free(&sb);
            return sgl_error_prefix(err, "json_dump()");
        }
        *res = vm_str_take(&sb);
        return 0;
    }
    case SGL_BUILTIN_REGEX_MATCH: {
        if (want("regex_match", args[0], VM_STR, 0, err) < 0 ||
            want("regex_match", args[1], VM_STR, 1, err) < 0)
            return -1;
        int m = vm_regex_match(vm_str_cstr(args[0]), vm_str_cstr(args[1]), vm_str_len(args[1]), err);
        if (m < 0) return sgl_error_prefix(err, "regex_match()");
        *res = vm_bool(m == 1);
        return 0;
    }
    case SGL_BUILTIN_TIME: {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        *res = vm_float((double)tv.tv_sec + tv.tv_usec / 1e6);
        return 0;
    }
    case SGL_BUILTIN_READ_FILE:
    case SGL_BUILTIN_WRITE_FILE:
    case SGL_BUILTIN_HTTP_GET:
    case SGL_BUILTIN_HTTP_POST:
    case SGL_BUILTIN_SHELL:
        break;
    default:
        return vm_builtin_ext(b, args, n, res, err);
    }
    const char *name = sgl_builtin_name(b);
    if (!allow_io) return sgl_error_set(err, "%s() needs --allow-io", name);
    if (want(name, args[0], VM_STR, 0, err) < 0) return -1;
    const char *a0 = vm_str_cstr(args[0]);
    switch (b) {
    case SGL_BUILTIN_READ_FILE: {
        size_t len;
        sgl_error e2 = {{0}};
        char *data = sgl_read_file(a0, &len, &e2);
        if (!data) return sgl_error_set(err, "read_file(): %s", e2.msg);
        *res = vm_str_new(data, len);
        free(data);
        return 0;
    }
    case SGL_BUILTIN_WRITE_FILE: {
        if (want(name, args[1], VM_STR, 1, err) < 0) return -1;
        FILE *fp = fopen(a0, "wb");
        if (!fp) return sgl_error_set(err, "write_file(): %s: %s", a0, strerror(errno));
        size_t w = fwrite(vm_str_cstr(args[1]), 1, vm_str_len(args[1]), fp);
        if (fclose(fp) != 0 || w != vm_str_len(args[1]))
            return sgl_error_set(err, "write_file(): %s: write failed", a0);
        return 0;
    }
    case SGL_BUILTIN_HTTP_GET: return http(name, a0, NULL, res, err);
    case SGL_BUILTIN_HTTP_POST: return http(name, a0, &args[1], res, err);
    default: return run_shell(a0, res, err);
    }
}
