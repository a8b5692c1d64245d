/* chat_template: recognises a model's chat format from its Jinja template and
 * renders message lists the way that template does (see chat_template.h).
 * The reference texts each family reproduces are quoted above its renderer.
 */
#include "runtime/chat_template.h"

#include <stdlib.h>
#include <string.h>

typedef enum ct_family { CT_CHATML, CT_LLAMA3, CT_LLAMA2, CT_PLAIN } ct_family;

enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_N };

struct chat_template {
    ct_family family;
    char *default_system; /* chatml only; NULL when none */
    const char *prefix[ROLE_N], *suffix[ROLE_N];
};

static const char *const family_names[] = {"chatml", "llama-3", "llama-2", "plain"};

static int role_index(const char *role) {
    if (role && strcmp(role, "system") == 0) return ROLE_SYSTEM;
    if (role && strcmp(role, "assistant") == 0) return ROLE_ASSISTANT;
    return ROLE_USER;
}

static void set_family(chat_template *ct, ct_family f) {
    static const char *const tab[][ROLE_N][2] = {
        [CT_CHATML] = {{"<|im_start|>system\n", "<|im_end|>\n"},
                       {"<|im_start|>user\n", "<|im_end|>\n"},
                       {"<|im_start|>assistant\n", "<|im_end|>\n"}},
        [CT_LLAMA3] = {{"<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"},
                       {"<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"},
                       {"<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"}},
        /* SGLang's llama-2-chat strings; chat_render folds the system turn
         * into the first user turn as the real template does. */
        [CT_LLAMA2] = {{"<<SYS>>\n", "\n<</SYS>>\n\n"},
                       {"<s>[INST] ", " [/INST]"},
                       {" ", " </s>"}},
        [CT_PLAIN] = {{"SYSTEM:", "\n"}, {"USER:", "\n"}, {"ASSISTANT:", "\n"}},
    };
    ct->family = f;
    for (int r = 0; r < ROLE_N; r++) {
        ct->prefix[r] = tab[f][r][0];
        ct->suffix[r] = tab[f][r][1];
    }
}

/* Finds the default system message a chatml template writes when the first
 * message is not a system one: the literal between "<|im_start|>system" + a
 * newline (real, or written "\n" inside a Jinja string) and "<|im_end|>".
 * Returns a malloc'd string or NULL. */
static char *find_default_system(const char *t) {
    if (!strstr(t, "!= 'system'") && !strstr(t, "!= \"system\"")) return NULL;
    const char *p = strstr(t, "<|im_start|>system");
    while (p) {
        const char *q = p + strlen("<|im_start|>system");
        size_t nl = *q == '\n' ? 1 : (q[0] == '\\' && q[1] == 'n') ? 2 : 0;
        const char *end = nl ? strstr(q + nl, "<|im_end|>") : NULL;
        if (end) {
            q += nl;
            /* Only a plain literal counts (no Jinja expressions or quotes). */
            bool literal = true;
            for (const char *c = q; c < end; c++)
                if (*c == '\'' || *c == '"' || *c == '{' || *c == '}') literal = false;
            if (literal && end > q) {
                char *s = malloc((size_t)(end - q) + 1);
                if (!s) return NULL;
                size_t o = 0;
                for (const char *c = q; c < end; c++) {
                    if (c[0] == '\\' && c + 1 < end && c[1] == 'n') {
                        s[o++] = '\n';
                        c++;
                    } else {
                        s[o++] = *c;
                    }
                }
                s[o] = 0;
                return s;
            }
        }
        p = strstr(p + 1, "<|im_start|>system");
    }
    return NULL;
}

chat_template *chat_template_from_text(const char *jinja, const sgl_tokenizer *tok,
                                       sgl_error *err) {
    chat_template *ct = calloc(1, sizeof *ct);
    if (!ct) {
        sgl_error_set(err, "chat template: out of memory");
        return NULL;
    }
    ct_family f = CT_PLAIN;
    if (jinja) {
        if (strstr(jinja, "<|im_start|>")) f = CT_CHATML;
        else if (strstr(jinja, "<|start_header_id|>")) f = CT_LLAMA3;
        else if (strstr(jinja, "[INST]")) f = CT_LLAMA2;
        else if (tok && tok_find(tok, "<|im_start|>") >= 0) f = CT_CHATML;
    }
    set_family(ct, f);
    if (f == CT_CHATML && jinja) ct->default_system = find_default_system(jinja);
    return ct;
}

chat_template *chat_template_from_gguf(const gguf_file *f, const sgl_tokenizer *tok,
                                       sgl_error *err) {
    char *t = gguf_get_string(f, "tokenizer.chat_template");
    chat_template *ct = chat_template_from_text(t, tok, err);
    free(t);
    return ct;
}

chat_template *chat_template_from_family(const char *family, sgl_error *err) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(family_names); i++) {
        if (strcmp(family, family_names[i]) != 0) continue;
        chat_template *ct = calloc(1, sizeof *ct);
        if (!ct) {
            sgl_error_set(err, "chat template: out of memory");
            return NULL;
        }
        set_family(ct, (ct_family)i);
        return ct;
    }
    sgl_error_set(err, "unknown chat template family '%s' (chatml, llama-3, llama-2, plain)",
                  family);
    return NULL;
}

void chat_template_free(chat_template *ct) {
    if (!ct) return;
    free(ct->default_system);
    free(ct);
}

const char *chat_template_family(const chat_template *ct) { return family_names[ct->family]; }

const char *chat_template_begin(const chat_template *ct) {
    return ct->family == CT_LLAMA3 ? "<|begin_of_text|>" : "";
}

const char *chat_template_default_system(const chat_template *ct) { return ct->default_system; }

const char *chat_role_prefix(const chat_template *ct, const char *role) {
    return ct->prefix[role_index(role)];
}

const char *chat_role_suffix(const chat_template *ct, const char *role) {
    return ct->suffix[role_index(role)];
}

/* Python's str.strip() / Jinja's trim over ASCII whitespace. */
static void strip(const char *s, const char **b, size_t *n) {
    size_t len = strlen(s), i = 0;
    while (i < len && strchr(" \t\n\r\v\f", s[i])) i++;
    while (len > i && strchr(" \t\n\r\v\f", s[len - 1])) len--;
    *b = s + i;
    *n = len - i;
}

/* chatml (SmolLM2's template; Qwen2's has the same shape):
 *   {% for message in messages %}
 *   {% if loop.first and messages[0]['role'] != 'system' %}
 *     {{ '<|im_start|>system\n' DEFAULT '<|im_end|>\n' }}{% endif %}
 *   {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}
 *   {% endfor %}
 *   {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %} */
static int render_chatml(const chat_template *ct, const chat_msg *m, size_t n, bool gen,
                         sgl_strbuf *o) {
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && ct->default_system && strcmp(m[0].role, "system") != 0)
            rc |= sgl_strbuf_printf(o, "<|im_start|>system\n%s<|im_end|>\n", ct->default_system);
        rc |= sgl_strbuf_printf(o, "<|im_start|>%s\n%s<|im_end|>\n", m[i].role, m[i].content);
    }
    if (gen) rc |= sgl_strbuf_puts(o, "<|im_start|>assistant\n");
    return rc;
}

/* llama-3 (Meta-Llama-3-Instruct):
 *   {% for message in messages %}{% set content = '<|start_header_id|>' +
 *   message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim +
 *   '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token +
 *   content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt
 *   %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %} */
static int render_llama3(const chat_msg *m, size_t n, bool gen, sgl_strbuf *o) {
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t len;
        strip(m[i].content, &b, &len);
        if (i == 0) rc |= sgl_strbuf_puts(o, "<|begin_of_text|>");
        rc |= sgl_strbuf_printf(o, "<|start_header_id|>%s<|end_header_id|>\n\n%.*s<|eot_id|>",
                                m[i].role, (int)len, b);
    }
    if (gen) rc |= sgl_strbuf_puts(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return rc;
}

/* llama-2 (Llama-2-chat): an optional first system message is folded into
 * the first user message as '<<SYS>>\n' + system + '\n<</SYS>>\n\n' +
 * content; then user/assistant must alternate, starting with user:
 *   user:      bos_token + '[INST] ' + content.strip() + ' [/INST]'
 *   assistant: ' ' + content.strip() + ' ' + eos_token
 * add_generation_prompt adds nothing (the text already ends in [/INST]). */
static int render_llama2(const chat_msg *m, size_t n, sgl_strbuf *o, sgl_error *err) {
    const char *system = NULL;
    if (n > 0 && strcmp(m[0].role, "system") == 0) {
        system = m[0].content;
        m++;
        n--;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        bool user = strcmp(m[i].role, "user") == 0;
        if (user != (i % 2 == 0) || (!user && strcmp(m[i].role, "assistant") != 0))
            return sgl_error_set(err, "llama-2 chat: roles must alternate user/assistant "
                                      "(message %zu is '%s')", i + (system ? 1 : 0), m[i].role);
        sgl_strbuf full = {0};
        if (i == 0 && system) rc |= sgl_strbuf_printf(&full, "<<SYS>>\n%s\n<</SYS>>\n\n", system);
        rc |= sgl_strbuf_puts(&full, m[i].content);
        const char *b;
        size_t len;
        strip(full.data ? full.data : "", &b, &len);
        if (user) rc |= sgl_strbuf_printf(o, "<s>[INST] %.*s [/INST]", (int)len, b);
        else rc |= sgl_strbuf_printf(o, " %.*s </s>", (int)len, b);
        sgl_strbuf_free(&full);
    }
    return rc ? sgl_error_set(err, "chat template: out of memory") : 0;
}

static int render_plain(const chat_template *ct, const chat_msg *m, size_t n, bool gen,
                        sgl_strbuf *o) {
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int r = role_index(m[i].role);
        rc |= sgl_strbuf_printf(o, "%s%s%s", ct->prefix[r], m[i].content, ct->suffix[r]);
    }
    if (gen) rc |= sgl_strbuf_puts(o, ct->prefix[ROLE_ASSISTANT]);
    return rc;
}

int chat_render(const chat_template *ct, const chat_msg *msgs, size_t n,
                bool add_generation_prompt, sgl_strbuf *out, sgl_error *err) {
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return sgl_error_set(err, "chat template: message %zu has no role or content", i);
    int rc;
    switch (ct->family) {
    case CT_CHATML: rc = render_chatml(ct, msgs, n, add_generation_prompt, out); break;
    case CT_LLAMA3: rc = render_llama3(msgs, n, add_generation_prompt, out); break;
    case CT_LLAMA2:
        if (render_llama2(msgs, n, out, err)) return -1;
        rc = 0;
        break;
    default: rc = render_plain(ct, msgs, n, add_generation_prompt, out); break;
    }
    if (rc) return sgl_error_set(err, "chat template: out of memory");
    return 0;
}
