/* prefix_tree: the router's approximate radix tree over prompt text, one per
 * endpoint. It remembers the prompts sent to an endpoint so a new prompt can
 * be sent where its longest prefix was sent before (where that endpoint's
 * cache most likely still holds it). "Approximate": it does not see the
 * endpoint's evictions; when it grows past its byte budget it is cleared
 * and relearns (SGLang's router evicts least-recently-used leaves instead).
 *
 * A compressed trie over bytes: each node's edge is a byte string; the
 * children of a node start with distinct bytes.
 *
 *   insert "abcd" then "abxy":      match "abcz" -> 3 ("abc" shares "ab",
 *     (root) -"ab"- (n) -"cd"- .     then 'c' begins edge "cd")
 *                       \-"xy"- .
 */
#ifndef SGL_REMOTE_PREFIX_TREE_H
#define SGL_REMOTE_PREFIX_TREE_H

#include <stddef.h>

typedef struct remote_tree remote_tree;

/* Returns an empty tree holding at most max_bytes of edge text (0: 64 MiB),
 * or NULL on OOM. */
remote_tree *remote_tree_new(size_t max_bytes);
void remote_tree_free(remote_tree *t);
/* Length of the longest prefix of s[0..n) the tree holds. */
size_t remote_tree_match(const remote_tree *t, const char *s, size_t n);
/* Adds s[0..n). Returns 0, or -1 on OOM (the tree is left as it was). */
int remote_tree_insert(remote_tree *t, const char *s, size_t n);
/* Bytes of edge text held. */
size_t remote_tree_bytes(const remote_tree *t);

#endif
