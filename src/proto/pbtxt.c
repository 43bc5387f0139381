/* pbtxt.c: protobuf text format into a node tree (see pbtxt.h).
 *
 * A recursive-descent parser over one cursor; recursion is bounded by OX_PBTXT_MAX_DEPTH. Nodes
 * live in one growable array and are linked by index while parsing (the array may move), then
 * turned into pointers once it is complete. Decoded strings go into one buffer of the input's
 * size: an escape never decodes to more bytes than it is written with, so it cannot overflow. */
#include "proto/pbtxt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define NONE UINT32_MAX

typedef struct {
  const char *start, *p, *end;
  ox_pbtxt_node_t *nodes;
  uint32_t *child, *next, *last; /* by node index: first child, next sibling, last child */
  size_t num, cap;
  char *strings;
  size_t str_used;
  char *err;
  size_t errcap;
} pb_t;

static void pb_pos(const pb_t *b, const char *at, uint32_t *line, uint32_t *col) {
  uint32_t l = 1, c = 1;
  for (const char *q = b->start; q < at; q++) {
    if (*q == '\n') {
      l++;
      c = 1;
    } else {
      c++;
    }
  }
  *line = l;
  *col = c;
}

__attribute__((format(printf, 3, 4))) static int pb_fail(pb_t *b, const char *at, const char *fmt,
                                                         ...) {
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  uint32_t line, col;
  pb_pos(b, at, &line, &col);
  snprintf(b->err, b->errcap, "%u:%u: %s", line, col, msg);
  return OX_EINVALID;
}

static void pb_ws(pb_t *b) {
  while (b->p < b->end) {
    char c = *b->p;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      b->p++;
    } else if (c == '#') {
      while (b->p < b->end && *b->p != '\n') b->p++;
    } else {
      return;
    }
  }
}

static int is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_ident_char(char c) {
  return is_ident_start(c) || (c >= '0' && c <= '9');
}
static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* Adds a node under parent (NONE for the root); returns its index or NONE on a bound/OOM. */
static int pb_node(pb_t *b, uint32_t parent, ox_pbtxt_kind_t kind, ox_slice_t key, const char *at,
                   uint32_t *out) {
  if (b->num == OX_PBTXT_MAX_NODES)
    return pb_fail(b, at, "more than %u fields", (unsigned)OX_PBTXT_MAX_NODES);
  if (b->num == b->cap) {
    size_t nc = b->cap ? b->cap * 2 : 64;
    if (nc > OX_PBTXT_MAX_NODES) nc = OX_PBTXT_MAX_NODES;
    ox_pbtxt_node_t *n = realloc(b->nodes, nc * sizeof *n);
    if (!n) return OX_ENOMEM;
    b->nodes = n;
    uint32_t *arr[3] = {b->child, b->next, b->last};
    for (int i = 0; i < 3; i++) {
      uint32_t *a = realloc(arr[i], nc * sizeof *a);
      if (!a) return OX_ENOMEM;
      arr[i] = a;
    }
    b->child = arr[0];
    b->next = arr[1];
    b->last = arr[2];
    b->cap = nc;
  }
  uint32_t i = (uint32_t)b->num++;
  ox_pbtxt_node_t *n = &b->nodes[i];
  memset(n, 0, sizeof *n);
  n->kind = kind;
  n->key = key;
  n->line = (uint32_t)(at - b->start); /* offset until the final pass turns it into line:col */
  b->child[i] = b->next[i] = b->last[i] = NONE;
  if (parent != NONE) {
    if (b->last[parent] == NONE)
      b->child[parent] = i;
    else
      b->next[b->last[parent]] = i;
    b->last[parent] = i;
  }
  *out = i;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* One quoted string (cursor on the quote), decoded onto the end of b->strings. */
static int pb_string1(pb_t *b) {
  const char *q0 = b->p;
  char quote = *b->p++;
  char *o = b->strings + b->str_used;
  while (b->p < b->end && *b->p != quote) {
    char c = *b->p++;
    if (c == '\n') return pb_fail(b, q0, "unterminated string");
    if (c != '\\') {
      *o++ = c;
      continue;
    }
    if (b->p >= b->end) break;
    const char *esc = b->p - 1;
    c = *b->p++;
    switch (c) {
      case 'n':
        *o++ = '\n';
        break;
      case 't':
        *o++ = '\t';
        break;
      case 'r':
        *o++ = '\r';
        break;
      case 'a':
        *o++ = '\a';
        break;
      case 'b':
        *o++ = '\b';
        break;
      case 'f':
        *o++ = '\f';
        break;
      case 'v':
        *o++ = '\v';
        break;
      case '\\':
      case '\'':
      case '"':
      case '?':
        *o++ = c;
        break;
      case 'x':
      case 'X': {
        int v = 0, n = 0;
        while (n < 2 && b->p < b->end && hexval(*b->p) >= 0) v = v * 16 + hexval(*b->p++), n++;
        if (!n) return pb_fail(b, esc, "\\x needs a hex digit");
        *o++ = (char)v;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int v = c - '0', n = 1;
          while (n < 3 && b->p < b->end && *b->p >= '0' && *b->p <= '7')
            v = v * 8 + (*b->p++ - '0'), n++;
          if (v > 255) return pb_fail(b, esc, "octal escape above \\377");
          *o++ = (char)v;
          break;
        }
        return pb_fail(b, esc, "unknown escape '\\%c'", (c >= 32 && c < 127) ? c : '?');
    }
  }
  if (b->p >= b->end) return pb_fail(b, q0, "unterminated string");
  b->p++;
  b->str_used = (size_t)(o - b->strings);
  return 0;
}

/* A scalar value into node i: strings (adjacent ones concatenated), numbers, identifiers. */
static int pb_scalar(pb_t *b, uint32_t i) {
  ox_pbtxt_node_t *n = &b->nodes[i];
  const char *at = b->p;
  if (b->p < b->end && (*b->p == '"' || *b->p == '\'')) {
    size_t from = b->str_used;
    do {
      int rc = pb_string1(b);
      if (rc) return rc;
      pb_ws(b);
    } while (b->p < b->end && (*b->p == '"' || *b->p == '\''));
    n = &b->nodes[i];
    n->kind = OX_PBTXT_STRING;
    n->text.ptr = b->strings + from;
    n->text.len = b->str_used - from;
    return 0;
  }
  const char *s = b->p;
  if (b->p < b->end && *b->p == '-') {
    b->p++;
    pb_ws(b); /* protobuf allows "- 5"; the token keeps the space, ox_pbtxt_int skips it */
  }
  if (b->p < b->end && (is_digit(*b->p) || *b->p == '.')) {
    char prev = 0;
    while (b->p < b->end && (is_ident_char(*b->p) || *b->p == '.' ||
                             ((*b->p == '+' || *b->p == '-') && (prev == 'e' || prev == 'E') &&
                              !(s[0] == '0' && b->p - s > 1 && (s[1] == 'x' || s[1] == 'X'))))) {
      prev = *b->p++;
    }
    n->kind = OX_PBTXT_NUMBER;
  } else if (b->p < b->end && is_ident_start(*b->p)) {
    while (b->p < b->end && is_ident_char(*b->p)) b->p++;
    n->kind = *s == '-' ? OX_PBTXT_NUMBER : OX_PBTXT_IDENT; /* -inf, -nan */
  } else {
    return pb_fail(b, at, "expected a value");
  }
  n->text.ptr = s;
  n->text.len = (size_t)(b->p - s);
  return 0;
}

static int pb_message(pb_t *b, uint32_t parent, char close, int depth);

/* The body of a message value: cursor on '{' or '<'. */
static int pb_sub(pb_t *b, uint32_t i, int depth) {
  if (depth >= OX_PBTXT_MAX_DEPTH)
    return pb_fail(b, b->p, "messages nested deeper than %d", OX_PBTXT_MAX_DEPTH);
  char close = *b->p == '{' ? '}' : '>';
  b->p++;
  b->nodes[i].kind = OX_PBTXT_MESSAGE;
  return pb_message(b, i, close, depth + 1);
}

/* One element of a field's value (after the ':' if any): a message or, when colon, a scalar. */
static int pb_value(pb_t *b, uint32_t parent, ox_slice_t key, const char *kat, int colon,
                    int depth) {
  uint32_t i;
  int rc = pb_node(b, parent, OX_PBTXT_MESSAGE, key, kat, &i);
  if (rc) return rc;
  pb_ws(b);
  if (b->p < b->end && (*b->p == '{' || *b->p == '<')) return pb_sub(b, i, depth);
  if (!colon)
    return pb_fail(b, b->p, "expected ':' or '{' after '%.*s'", (int)(key.len > 64 ? 64 : key.len),
                   key.ptr);
  return pb_scalar(b, i);
}

static int pb_field(pb_t *b, uint32_t parent, int depth) {
  const char *kat = b->p;
  if (*b->p == '[') return pb_fail(b, kat, "extension and Any fields are not supported");
  if (!is_ident_start(*b->p)) return pb_fail(b, kat, "expected a field name");
  while (b->p < b->end && is_ident_char(*b->p)) b->p++;
  ox_slice_t key = {kat, (size_t)(b->p - kat)};
  pb_ws(b);
  int colon = 0;
  if (b->p < b->end && *b->p == ':') {
    colon = 1;
    b->p++;
    pb_ws(b);
  }
  if (b->p < b->end && *b->p == '[') {
    b->p++;
    pb_ws(b);
    if (b->p < b->end && *b->p == ']') {
      b->p++;
      return 0;
    }
    for (;;) {
      int rc = pb_value(b, parent, key, b->p, 1, depth); /* positioned at the element */
      if (rc) return rc;
      pb_ws(b);
      if (b->p < b->end && *b->p == ',') {
        b->p++;
        pb_ws(b);
        continue;
      }
      if (b->p < b->end && *b->p == ']') {
        b->p++;
        return 0;
      }
      return pb_fail(b, b->p, "expected ',' or ']' in the list '%.*s'",
                     (int)(key.len > 64 ? 64 : key.len), key.ptr);
    }
  }
  return pb_value(b, parent, key, kat, colon, depth);
}

/* Fields until close ('}' or '>', consumed) or, for the root (close 0), the end of input. */
static int pb_message(pb_t *b, uint32_t parent, char close, int depth) {
  for (;;) {
    pb_ws(b);
    if (b->p >= b->end) {
      if (!close) return 0;
      return pb_fail(b, b->p, "expected '%c' before the end", close);
    }
    if (close && *b->p == close) {
      b->p++;
      return 0;
    }
    int rc = pb_field(b, parent, depth);
    if (rc) return rc;
    pb_ws(b);
    if (b->p < b->end && (*b->p == ',' || *b->p == ';')) b->p++;
  }
}

int ox_pbtxt_parse(const char *text, size_t len, ox_pbtxt_doc_t *doc, char *err, size_t errcap) {
  memset(doc, 0, sizeof *doc);
  char dummy[1];
  if (!err || !errcap) {
    err = dummy;
    errcap = sizeof dummy;
  }
  err[0] = 0;
  if (len > OX_PBTXT_MAX_BYTES) {
    snprintf(err, errcap, "1:1: larger than %u bytes", (unsigned)OX_PBTXT_MAX_BYTES);
    return OX_EINVALID;
  }
  pb_t b = {.start = text, .p = text, .end = text + len, .err = err, .errcap = errcap};
  b.strings = malloc(len ? len : 1);
  int rc = b.strings ? 0 : OX_ENOMEM;
  uint32_t root = 0;
  if (!rc) rc = pb_node(&b, NONE, OX_PBTXT_MESSAGE, (ox_slice_t){text, 0}, text, &root);
  if (!rc) rc = pb_message(&b, root, 0, 0);
  if (!rc) {
    /* nodes were made in text order: one walk turns their offsets into line:col */
    uint32_t line = 1, col = 1;
    size_t off = 0;
    for (size_t i = 0; i < b.num; i++) {
      size_t to = b.nodes[i].line;
      for (; off < to; off++) {
        if (text[off] == '\n') {
          line++;
          col = 1;
        } else {
          col++;
        }
      }
      b.nodes[i].line = line;
      b.nodes[i].col = col;
      b.nodes[i].child = b.child[i] == NONE ? NULL : &b.nodes[b.child[i]];
      b.nodes[i].next = b.next[i] == NONE ? NULL : &b.nodes[b.next[i]];
    }
    doc->nodes = b.nodes;
    doc->num_nodes = b.num;
    doc->strings = b.strings;
  } else {
    free(b.nodes);
    free(b.strings);
    if (rc == OX_ENOMEM) snprintf(err, errcap, "out of memory");
  }
  free(b.child);
  free(b.next);
  free(b.last);
  return rc;
}

void ox_pbtxt_free(ox_pbtxt_doc_t *doc) {
  free(doc->nodes);
  free(doc->strings);
  memset(doc, 0, sizeof *doc);
}

int ox_pbtxt_key_is(const ox_pbtxt_node_t *n, const char *s) {
  size_t l = strlen(s);
  return n->key.len == l && !memcmp(n->key.ptr, s, l);
}

const ox_pbtxt_node_t *ox_pbtxt_find(const ox_pbtxt_node_t *msg, const char *key) {
  if (!msg || msg->kind != OX_PBTXT_MESSAGE) return NULL;
  for (const ox_pbtxt_node_t *c = msg->child; c; c = c->next)
    if (ox_pbtxt_key_is(c, key)) return c;
  return NULL;
}

const ox_pbtxt_node_t *ox_pbtxt_find_next(const ox_pbtxt_node_t *n) {
  for (const ox_pbtxt_node_t *c = n->next; c; c = c->next)
    if (c->key.len == n->key.len && !memcmp(c->key.ptr, n->key.ptr, n->key.len)) return c;
  return NULL;
}

size_t ox_pbtxt_count(const ox_pbtxt_node_t *msg, const char *key) {
  size_t k = 0;
  for (const ox_pbtxt_node_t *c = ox_pbtxt_find(msg, key); c; c = ox_pbtxt_find_next(c)) k++;
  return k;
}

int ox_pbtxt_int(const ox_pbtxt_node_t *n, int64_t *out) {
  if (n->kind != OX_PBTXT_NUMBER) return OX_EINVALID;
  const char *p = n->text.ptr, *e = p + n->text.len;
  int neg = 0;
  if (p < e && *p == '-') {
    neg = 1;
    p++;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  }
  if (p == e) return OX_EINVALID;
  unsigned base = 10;
  if (e - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  }
  uint64_t mag = 0;
  for (; p < e; p++) {
    int d = base == 16 ? hexval(*p) : (is_digit(*p) ? *p - '0' : -1);
    if (d < 0) return OX_EINVALID;
    if (__builtin_mul_overflow(mag, (uint64_t)base, &mag) ||
        __builtin_add_overflow(mag, (uint64_t)d, &mag))
      return OX_EINVALID;
  }
  if (neg) {
    if (mag > (uint64_t)INT64_MAX + 1) return OX_EINVALID;
    *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
  } else {
    if (mag > (uint64_t)INT64_MAX) return OX_EINVALID;
    *out = (int64_t)mag;
  }
  return 0;
}
