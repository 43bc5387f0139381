/* pbtxt.h: a bounded parser for protobuf's text format (Triton's config.pbtxt).
 *
 * The whole text is parsed at once into a tree of nodes: one array of nodes and one buffer of
 * decoded strings, both owned by the document. No schema: every field is a node with its key,
 * and a node is either a message (children) or a scalar (a quoted string, decoded; a number or
 * an identifier, as written). Repeated fields appear as several nodes with the same key, whether
 * written as repeated keys or as a `key: [a, b]` list (the list form is flattened).
 *
 * Accepted syntax: `# comments`; `key: value`, `key { ... }`, `key: { ... }`, `key < ... >`;
 * lists `key: [1, 2]`, `key [ { ... }, { ... } ]`; optional `,` or `;` after a field; strings in
 * '..' or ".." with C escapes (\n \t \r \a \b \f \v \\ \' \" \? \xHH, octal \NNN), adjacent
 * strings concatenated; numbers (decimal, 0x hex, floats, leading '-'); identifiers (enum
 * values, true/false, inf, nan). Extension keys ([pkg.ext]) and Any are refused.
 *
 * Bounds: at most OX_PBTXT_MAX_BYTES of input, OX_PBTXT_MAX_DEPTH nested messages and
 * OX_PBTXT_MAX_NODES nodes. Errors name the line and column ("3:14: expected ':'").
 */
#ifndef OX_PROTO_PBTXT_H
#define OX_PROTO_PBTXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define OX_PBTXT_MAX_BYTES (1u << 20)
#define OX_PBTXT_MAX_DEPTH 32
#define OX_PBTXT_MAX_NODES 65536u

typedef enum { OX_PBTXT_MESSAGE, OX_PBTXT_STRING, OX_PBTXT_NUMBER, OX_PBTXT_IDENT } ox_pbtxt_kind_t;

typedef struct ox_pbtxt_node {
  ox_pbtxt_kind_t kind;
  ox_slice_t key;  /* field name (borrowed from the input text); empty for the root */
  ox_slice_t text; /* scalars: STRING decoded (in the document's buffer, may hold NUL bytes),
                      NUMBER/IDENT as written (borrowed from the input) */
  const struct ox_pbtxt_node *child; /* MESSAGE: first field, NULL when empty */
  const struct ox_pbtxt_node *next;  /* next field of the same message */
  uint32_t line, col;                /* where the key starts (1-based) */
} ox_pbtxt_node_t;

typedef struct {
  ox_pbtxt_node_t *nodes; /* owned; nodes[0] is the root message */
  size_t num_nodes;
  char *strings; /* owned: decoded string contents */
} ox_pbtxt_doc_t;

/* Parses text[0..len) (borrowed: keys and numbers point into it, so it must outlive doc).
 * Returns 0 with doc filled (free with ox_pbtxt_free), OX_EINVALID with "line:col: reason" in
 * err, or OX_ENOMEM. On error doc holds nothing to free (ox_pbtxt_free is still safe). */
int ox_pbtxt_parse(const char *text, size_t len, ox_pbtxt_doc_t *doc, char *err, size_t errcap);
void ox_pbtxt_free(ox_pbtxt_doc_t *doc);

static inline const ox_pbtxt_node_t *ox_pbtxt_root(const ox_pbtxt_doc_t *doc) {
  return &doc->nodes[0];
}
/* The first field of msg named key (NUL-terminated), or NULL. */
const ox_pbtxt_node_t *ox_pbtxt_find(const ox_pbtxt_node_t *msg, const char *key);
/* The next field after n with the same key, or NULL (iterates a repeated field). */
const ox_pbtxt_node_t *ox_pbtxt_find_next(const ox_pbtxt_node_t *n);
/* Number of fields of msg named key. */
size_t ox_pbtxt_count(const ox_pbtxt_node_t *msg, const char *key);
/* 1 when n's key equals the NUL-terminated s. */
int ox_pbtxt_key_is(const ox_pbtxt_node_t *n, const char *s);
/* A NUMBER node as a 64-bit integer: decimal or 0x hex, optional '-', overflow-checked.
 * Returns 0, or OX_EINVALID when n is not such an integer. */
int ox_pbtxt_int(const ox_pbtxt_node_t *n, int64_t *out);

#endif
