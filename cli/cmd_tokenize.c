/* cmd_tokenize: `sglc tokenize` prints the token ids and pieces of a text
 * under a model's tokenizer (and, with --chat, its chat-template rendering).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/chat_template.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode.h"
#include "util/util.h"

enum { O_MODEL = 1, O_NO_SPECIAL, O_ADD_SPECIAL, O_CHAT, O_JSON };

static const cli_option tok_options[] = {
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_NO_SPECIAL, "--no-special", NULL, NULL, "treat special-token text like \"<|im_end|>\" as plain text"},
    {O_ADD_SPECIAL, "--add-special", NULL, NULL, "add BOS/EOS where the model's GGUF asks for them"},
    {O_CHAT, "--chat", NULL, NULL,
     "render TEXT as one user message with the model's chat template\n"
     "(plus the assistant prompt) and tokenize that"},
    {O_JSON, "--json", NULL, NULL, "print {\"text\", \"count\", \"ids\", \"tokens\": [{id, text, piece}]}"},
    {0},
};

static const cli_option *const tok_tables[] = {tok_options, NULL};

static const cli_spec tok_spec = {
    .name = "tokenize",
    .synopsis = "sglc tokenize [options] [TEXT | - | -- TEXT]",
    .about = "Prints one line per token: id, the bytes it stands for (quoted, C escapes), and\n"
             "the vocabulary text; then the count. TEXT '-' or absent: read standard input;\n"
             "a TEXT that starts with '-' goes after `--`.\n",
    .tables = tok_tables,
    .json_id = O_JSON,
};

/* Prints "sglc tokenize: error: MSG" (and the JSON error document under
 * --json); returns status. */
static int fail(bool json, int status, const char *kind, const char *msg) {
    fprintf(stderr, "sglc tokenize: error: %s\n", msg);
    if (json) cli_json_error(kind, msg, NULL, 0, 0);
    return status;
}

/* Appends bytes as a quoted C-style string: printable ASCII and valid UTF-8
 * as is, the rest as escapes. */
static void quote(sgl_strbuf *o, const char *s, size_t n) {
    sgl_strbuf_putc(o, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t l = uni_decode((const uint8_t *)s + i, n - i, &cp);
        if (c == '"' || c == '\\') sgl_strbuf_printf(o, "\\%c", c);
        else if (c == '\n') sgl_strbuf_puts(o, "\\n");
        else if (c == '\t') sgl_strbuf_puts(o, "\\t");
        else if (c == '\r') sgl_strbuf_puts(o, "\\r");
        else if (c < 0x20 || c == 0x7F || cp == UNI_INVALID) sgl_strbuf_printf(o, "\\x%02x", c);
        else if ((uni_class(cp) & UNI_SPACE) && cp >= 0x80) sgl_strbuf_printf(o, "\\u%04x", cp);
        else sgl_strbuf_append(o, s + i, l);
        i += l;
    }
    sgl_strbuf_putc(o, '"');
}

static char *read_stdin(void) {
    sgl_strbuf sb = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) sgl_strbuf_append(&sb, buf, n);
    return sgl_strbuf_take(&sb);
}

int cmd_tokenize(int argc, char **argv) {
    const char *model_flag = NULL, *text_arg = NULL;
    bool no_special = false, add_special = false, chat = false, json = false;
    cli_args a;
    cli_args_init(&a, &tok_spec, argc, argv);
    json = a.json;
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        switch (id) {
        case O_MODEL: model_flag = a.value; break;
        case O_NO_SPECIAL: no_special = true; break;
        case O_ADD_SPECIAL: add_special = true; break;
        case O_CHAT: chat = true; break;
        case O_JSON: json = true; break;
        case CLI_OPERAND:
            if (text_arg) cli_usage_error(&a, "give one TEXT argument (quote it)");
            text_arg = a.value;
            break;
        }
    }
    char *path = cli_model_path(model_flag);
    if (!path) return fail(json, CLI_EXIT_USAGE, "setup", "no model found (--model PATH or $SGL_MODEL)");
    sgl_error err = {0};
    gguf_file *f = gguf_open(path, &err);
    if (!f) {
        char msg[sizeof err.msg + 512];
        snprintf(msg, sizeof msg, "%.255s: %s", path, err.msg);
        free(path);
        return fail(json, CLI_EXIT_USAGE, "setup", msg);
    }
    sgl_tokenizer *tok = tok_load_gguf(f, &err);
    chat_template *ct = tok && chat ? chat_template_from_gguf(f, tok, &err) : NULL;
    gguf_close(f);
    free(path);
    if (!tok || (chat && !ct)) {
        tok_free(tok);
        return fail(json, !tok ? CLI_EXIT_USAGE : CLI_EXIT_ERROR, !tok ? "setup" : "input", err.msg);
    }

    char *text = text_arg && strcmp(text_arg, "-") != 0 ? sgl_strdup(text_arg) : read_stdin();
    if (chat) {
        sgl_strbuf r = {0};
        chat_msg m = {"user", text};
        if (chat_render(ct, &m, 1, true, &r, &err)) return fail(json, CLI_EXIT_ERROR, "input", err.msg);
        free(text);
        text = sgl_strbuf_take(&r);
    }
    unsigned flags = (no_special ? 0 : TOK_ENC_PARSE_SPECIAL) | (add_special ? TOK_ENC_ADD_SPECIAL : 0);
    int32_t *ids;
    size_t n;
    if (tok_encode_ex(tok, text, strlen(text), flags, &ids, &n, &err)) return fail(json, CLI_EXIT_ERROR, "input", err.msg);

    if (json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray(), *toks = cJSON_CreateArray();
        char *clean = uni_utf8_cstr(text, strlen(text));
        cJSON_AddStringToObject(root, "text", clean);
        free(clean);
        cJSON_AddNumberToObject(root, "count", (double)n);
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *p = tok_piece(tok, ids[i], &len);
            char *piece = uni_utf8_cstr(p, len);
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "id", ids[i]);
            cJSON_AddStringToObject(t, "text", tok_text(tok, ids[i]));
            cJSON_AddStringToObject(t, "piece", piece);
            if (tok_is_special(tok, ids[i])) cJSON_AddTrueToObject(t, "special");
            cJSON_AddItemToArray(toks, t);
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
            free(piece);
        }
        cJSON_AddItemToObject(root, "ids", arr);
        cJSON_AddItemToObject(root, "tokens", toks);
        cli_json_print(root);
    } else {
        sgl_strbuf line = {0};
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *p = tok_piece(tok, ids[i], &len);
            sgl_strbuf_clear(&line);
            sgl_strbuf_printf(&line, "%7d  ", ids[i]);
            quote(&line, p, len);
            const char *vt = tok_text(tok, ids[i]);
            if (tok_is_special(tok, ids[i])) sgl_strbuf_puts(&line, "  (special)");
            else if (strlen(vt) != len || memcmp(vt, p, len) != 0) {
                sgl_strbuf_puts(&line, "  ");
                quote(&line, vt, strlen(vt));
            }
            printf("%s\n", line.data);
        }
        sgl_strbuf_free(&line);
        printf("%zu token%s\n", n, n == 1 ? "" : "s");
    }
    free(ids);
    free(text);
    chat_template_free(ct);
    tok_free(tok);
    return 0;
}
