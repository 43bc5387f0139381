/* fuzz_pbtxt.c: libFuzzer harness for the protobuf text-format parser (proto/pbtxt.h).
 *
 * The input is the text, copied into a buffer of exactly its size so ASan sees a read one past
 * it. Beyond "no crash", the harness checks:
 *   - the result is 0, OX_EINVALID or OX_ENOMEM; on OX_EINVALID a NUL-terminated message of the
 *     form "line:col: reason";
 *   - on success: nodes[0] is the root message; walking the tree from it reaches every node
 *     exactly once; keys and NUMBER/IDENT texts lie inside the input, decoded strings inside a
 *     buffer no larger than it; lines and columns start at 1; ox_pbtxt_find agrees with the walk;
 *   - parsing is deterministic: a second parse gives the same tree shape and texts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "proto/pbtxt.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static size_t walk(const ox_pbtxt_node_t *n, const char *in, size_t size, const char *strs,
                   int depth) {
  REQUIRE(depth <= OX_PBTXT_MAX_DEPTH + 1);
  size_t k = 1;
  REQUIRE(n->line >= 1 && n->col >= 1);
  if (n->kind == OX_PBTXT_MESSAGE) {
    for (const ox_pbtxt_node_t *c = n->child; c; c = c->next) {
      REQUIRE(c->key.len > 0 && c->key.ptr >= in && c->key.ptr + c->key.len <= in + size);
      const ox_pbtxt_node_t *f = n->child;
      while (f->key.len != c->key.len || memcmp(f->key.ptr, c->key.ptr, c->key.len)) f = f->next;
      char key[64];
      if (c->key.len < sizeof key) {
        memcpy(key, c->key.ptr, c->key.len);
        key[c->key.len] = 0;
        REQUIRE(ox_pbtxt_find(n, key) == f);
      }
      k += walk(c, in, size, strs, depth + 1);
    }
  } else if (n->kind == OX_PBTXT_STRING) {
    REQUIRE(n->text.len <= size && n->text.ptr >= strs && n->text.ptr + n->text.len <= strs + size);
  } else {
    REQUIRE(n->text.len > 0 && n->text.ptr >= in && n->text.ptr + n->text.len <= in + size);
    int64_t v;
    int rc = ox_pbtxt_int(n, &v);
    REQUIRE(rc == 0 || rc == OX_EINVALID);
  }
  return k;
}

static void same(const ox_pbtxt_node_t *a, const ox_pbtxt_node_t *b) {
  REQUIRE(a->kind == b->kind && a->line == b->line && a->col == b->col);
  REQUIRE(a->key.len == b->key.len && a->key.ptr == b->key.ptr);
  REQUIRE(a->text.len == b->text.len &&
          (!a->text.len || !memcmp(a->text.ptr, b->text.ptr, a->text.len)));
  const ox_pbtxt_node_t *x = a->child, *y = b->child;
  for (; x && y; x = x->next, y = y->next) same(x, y);
  REQUIRE(!x && !y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size ? size : 1);
  if (!text) return 0;
  memcpy(text, data, size);
  ox_pbtxt_doc_t doc, doc2;
  char err[160];
  memset(err, 'x', sizeof err);
  int rc = ox_pbtxt_parse(text, size, &doc, err, sizeof err);
  REQUIRE(rc == 0 || rc == OX_EINVALID || rc == OX_ENOMEM);
  if (rc == OX_EINVALID) {
    REQUIRE(memchr(err, 0, sizeof err) != NULL && err[0] >= '1' && err[0] <= '9');
    REQUIRE(strchr(err, ':') != NULL);
  }
  if (rc == 0) {
    REQUIRE(doc.num_nodes >= 1 && doc.num_nodes <= OX_PBTXT_MAX_NODES);
    REQUIRE(ox_pbtxt_root(&doc)->kind == OX_PBTXT_MESSAGE);
    REQUIRE(walk(ox_pbtxt_root(&doc), text, size, doc.strings, 0) == doc.num_nodes);
    REQUIRE(ox_pbtxt_parse(text, size, &doc2, err, sizeof err) == 0);
    REQUIRE(doc2.num_nodes == doc.num_nodes);
    same(ox_pbtxt_root(&doc), ox_pbtxt_root(&doc2));
    ox_pbtxt_free(&doc2);
  }
  ox_pbtxt_free(&doc);
  free(text);
  return 0;
}
