/* buf.c: see buf.h. */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/utf8.h"

int ox_buf_reserve(ox_buf_t *b, size_t extra) {
  size_t need;
  if (__builtin_add_overflow(b->len, extra, &need)) return OX_ENOMEM;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (__builtin_mul_overflow(cap, 2, &cap)) return OX_ENOMEM;
  }
  char *d = realloc(b->data, cap);
  if (!d) return OX_ENOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

int ox_buf_append(ox_buf_t *b, const void *p, size_t n) {
  int rc = ox_buf_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int ox_buf_printf(ox_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return OX_EINVALID;
  int rc = ox_buf_reserve(b, (size_t)n + 1);
  if (rc) return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

int ox_buf_append_json_string(ox_buf_t *b, const char *s, size_t n) {
  /* Worst case 6 bytes per input byte plus quotes. */
  size_t worst;
  if (__builtin_mul_overflow(n, 6, &worst) || __builtin_add_overflow(worst, 2, &worst))
    return OX_ENOMEM;
  int rc = ox_buf_reserve(b, worst);
  if (rc) return rc;
  static const char hex[] = "0123456789abcdef";
  char *o = b->data + b->len;
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      *o++ = '\\';
      switch (c) {
        case '\n':
          *o++ = 'n';
          break;
        case '\r':
          *o++ = 'r';
          break;
        case '\t':
          *o++ = 't';
          break;
        default:
          *o++ = 'u';
          *o++ = '0';
          *o++ = '0';
          *o++ = hex[c >> 4];
          *o++ = hex[c & 15];
      }
    } else if (c < 0x80) {
      *o++ = (char)c;
    } else {
      /* a well-formed sequence is copied; any other byte becomes U+FFFD (6 bytes, the same
       * worst case as \u00XX), so the answer is valid UTF-8 whatever the input */
      size_t k = ox_utf8_seq((const unsigned char *)s + i, n - i);
      if (k) {
        memcpy(o, s + i, k);
        o += k;
        i += k - 1;
      } else {
        memcpy(o, "\\ufffd", 6);
        o += 6;
      }
    }
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  return 0;
}

void ox_buf_free(ox_buf_t *b) {
  free(b->data);
  ox_buf_init(b);
}
