/* base64_ref.h: a plain reference base64 encoder (RFC 4648 alphabet, '=' padding) for the
 * decoder's tests: tests/unit/base64_test.c and tests/fuzz/fuzz_base64.c. */
#ifndef OX_TEST_BASE64_REF_H
#define OX_TEST_BASE64_REF_H

#include <stddef.h>

/* Writes the encoding of in[0..n) to out, which has room for (n + 2) / 3 * 4 bytes (no NUL is
 * written); returns its length. */
static inline size_t ox_test_base64_encode(const unsigned char *in, size_t n, char *out) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                 (i + 2 < n ? in[i + 2] : 0);
    out[o++] = a[v >> 18 & 63];
    out[o++] = a[v >> 12 & 63];
    out[o++] = i + 1 < n ? a[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? a[v & 63] : '=';
  }
  return o;
}

#endif
