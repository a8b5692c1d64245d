/* chat_template: the chat formats of the known model families, picked from
 * a GGUF's tokenizer.chat_template (a Jinja text we do not execute: we
 * recognise its family and reproduce what it renders).
 *
 * Families:
 *   "chatml"  <|im_start|>ROLE\nCONTENT<|im_end|>\n  (SmolLM2, Qwen2, ...);
 *             a default system message written in the template (SmolLM2:
 *             "You are a helpful AI assistant named SmolLM, trained by
 *             Hugging Face") is inserted when the first message is not a
 *             system one.
 *   "llama-3" <|begin_of_text|> then
 *             <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>
 *             (content trimmed as the template's `| trim` does).
 *   "llama-2" <s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ASSISTANT </s>
 *             (system folded into the first user turn; contents stripped).
 *   "plain"   no template in the file: "SYSTEM: ...\n", "USER: ...\n",
 *             "ASSISTANT: ...\n" (SGLang's default template).
 *
 * Role prefix/suffix: the strings SGLang wraps around system(...),
 * user(...), assistant(...) so a program builds the same prompt turn by turn.
 * chat_render gives exactly what the model's Jinja template renders for a
 * whole message list.
 */
#ifndef SGL_CHAT_TEMPLATE_H
#define SGL_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "util/util.h"

typedef struct chat_template chat_template;

/* One message; both strings are owned by the caller. role is "system",
 * "user" or "assistant" (other roles render like user for chatml/llama-3 and
 * are rejected by llama-2). */
typedef struct chat_msg {
    const char *role;
    const char *content;
} chat_msg;

/* Detects the family from f's tokenizer.chat_template ("<|im_start|>" ->
 * chatml, "<|start_header_id|>" -> llama-3, "[INST]" -> llama-2, missing ->
 * plain, any other text -> chatml if the vocabulary has <|im_start|>, else
 * plain). tok may be NULL; when given, it is used to check special tokens.
 * Returns a new template (caller frees with chat_template_free) or NULL with
 * err set when memory runs out. */
chat_template *chat_template_from_gguf(const gguf_file *f, const sgl_tokenizer *tok,
                                       sgl_error *err);
/* Same from a template text (NULL = none); for tests and --chat-template. */
chat_template *chat_template_from_text(const char *jinja, const sgl_tokenizer *tok,
                                       sgl_error *err);
/* A family by name ("chatml", "llama-3", "llama-2", "plain"); NULL with err
 * set for an unknown name. The chatml form has no default system message. */
chat_template *chat_template_from_family(const char *family, sgl_error *err);
void chat_template_free(chat_template *ct);

/* "chatml", "llama-3", "llama-2" or "plain". Static string. */
const char *chat_template_family(const chat_template *ct);
/* Text that starts every rendered conversation ("<|begin_of_text|>" for
 * llama-3, "" otherwise; llama-2's "<s>" is part of the user prefix). */
const char *chat_template_begin(const chat_template *ct);
/* The default system message (NULL when the template has none). Owned by ct. */
const char *chat_template_default_system(const chat_template *ct);
/* Strings around a message of role ("system", "user", "assistant"; other
 * names get the user strings). Owned by ct; never NULL. */
const char *chat_role_prefix(const chat_template *ct, const char *role);
const char *chat_role_suffix(const chat_template *ct, const char *role);

/* Appends the rendering of msgs[0..n) to out, exactly as the family's
 * template renders it, then the assistant prefix if add_generation_prompt.
 * Returns 0, or -1 with err set (unknown role for llama-2, out of memory). */
int chat_render(const chat_template *ct, const chat_msg *msgs, size_t n,
                bool add_generation_prompt, sgl_strbuf *out, sgl_error *err);

#endif
