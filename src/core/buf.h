/* buf.h: a growable byte buffer (redis sds, h2o buffer) for building responses. */
#ifndef OX_CORE_BUF_H
#define OX_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
  char *data; /* owned (malloc); NULL when empty and never grown */
  size_t len, cap;
} ox_buf_t;

static inline void ox_buf_init(ox_buf_t *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}
/* Ensures room for extra more bytes; 0 or OX_ENOMEM (the buffer is unchanged on failure). */
int ox_buf_reserve(ox_buf_t *b, size_t extra);
int ox_buf_append(ox_buf_t *b, const void *p, size_t n);
static inline int ox_buf_puts(ox_buf_t *b, const char *s);
int ox_buf_printf(ox_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes, escapes; control bytes as \u00XX; well-formed
 * UTF-8 copied, and every byte that is not part of a well-formed UTF-8 sequence replaced by
 * \ufffd, so the result is always valid JSON and valid UTF-8). */
int ox_buf_append_json_string(ox_buf_t *b, const char *s, size_t n);
void ox_buf_free(ox_buf_t *b);

#include <string.h>
static inline int ox_buf_puts(ox_buf_t *b, const char *s) {
  return ox_buf_append(b, s, strlen(s));
}

#endif
