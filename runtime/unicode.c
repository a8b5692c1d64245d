/* unicode: UTF-8 decoding and repair, code point classes (see unicode.h). */
#include "runtime/unicode.h"

#include <stdlib.h>
#include <string.h>

unsigned uni_class(uint32_t cp) {
    if (cp < 128) return uni_ascii_class[cp];
    size_t lo = 0, hi = uni_n_ranges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_ranges[mid].first) hi = mid;
        else if (cp > uni_ranges[mid].last) lo = mid + 1;
        else return uni_ranges[mid].flags;
    }
    return 0;
}

/* Valid range of the second byte for a lead byte (Unicode Table 3-7); the
 * remaining continuation bytes are always 80..BF. */
static int lead_info(uint8_t b, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b == 0xE0) { *lo = 0xA0; return 3; }
    if (b >= 0xE1 && b <= 0xEC) return 3;
    if (b == 0xED) { *hi = 0x9F; return 3; }
    if (b >= 0xEE && b <= 0xEF) return 3;
    if (b == 0xF0) { *lo = 0x90; return 4; }
    if (b >= 0xF1 && b <= 0xF3) return 4;
    if (b == 0xF4) { *hi = 0x8F; return 4; }
    return 0;
}

size_t uni_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    uint8_t lo, hi;
    int len = lead_info(b, &lo, &hi);
    if (len == 0 || (size_t)len > n || s[1] < lo || s[1] > hi) {
        *cp = UNI_INVALID;
        return 1;
    }
    uint32_t c = b & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if (i > 1 && (s[i] & 0xC0) != 0x80) {
            *cp = UNI_INVALID;
            return 1;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return (size_t)len;
}

size_t uni_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t uni_valid_prefix_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t lo, hi;
    int len = lead_info(s[0], &lo, &hi);
    if (len == 0 || n >= (size_t)len) return 0;
    for (size_t i = 1; i < n; i++) {
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (s[i] < l || s[i] > h) return 0;
    }
    return n;
}

char *uni_utf8_cstr(const char *s, size_t n) {
    char *out = malloc(n * 3 + 1);
    if (out) out[uni_utf8_repair(s, n, out, UNI_REPAIR_NUL, NULL)] = 0;
    return out;
}

size_t uni_utf8_repair(const char *s, size_t n, char *out, unsigned flags, size_t *held) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, o = 0;
    if (held) *held = 0;
    while (i < n) {
        uint8_t b = u[i];
        if (b < 0x80 && (b != 0 || !(flags & UNI_REPAIR_NUL))) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        size_t part = 1; /* bytes of the invalid subpart at i */
        uint8_t lo, hi;
        int len = b < 0x80 ? 0 : lead_info(b, &lo, &hi);
        if (len > 0) {
            size_t k = 1; /* the lead byte, then continuation bytes in range */
            while (k < (size_t)len && i + k < n && u[i + k] >= (k == 1 ? lo : 0x80) &&
                   u[i + k] <= (k == 1 ? hi : 0xBF))
                k++;
            if (k == (size_t)len) {
                memcpy(out + o, s + i, k);
                o += k;
                i += k;
                continue;
            }
            if (i + k == n && (flags & UNI_REPAIR_STREAM)) {
                if (held) *held = k;
                break;
            }
            part = k;
        }
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i += part;
    }
    return o;
}
