/* utf8.c: see utf8.h. The table of well-formed byte sequences of RFC 3629, section 4. */
#include "core/utf8.h"

size_t ox_utf8_seq(const unsigned char *p, size_t n) {
  if (n == 0) return 0;
  unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0; /* overlong */
    else if (c == 0xed)
      hi = 0x9f; /* surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90; /* overlong */
    else if (c == 0xf4)
      hi = 0x8f; /* above U+10FFFF */
  } else {
    return 0; /* continuation byte, C0/C1 (overlong), F5..FF */
  }
  if (n < len || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (p[i] < 0x80 || p[i] > 0xbf) return 0;
  return len;
}

int ox_utf8_valid(const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n;) {
    size_t k = ox_utf8_seq(p + i, n - i);
    if (!k) return 0;
    i += k;
  }
  return 1;
}
