/* base64.c: strict standard base64 decoding (base64.h). */
#include "core/base64.h"

#include "core/error.h"

/* Value of a base64 character, or -1. */
static int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int ox_base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen) {
  *outlen = 0;
  if (n % 4 || cap < ox_base64_decoded_max(n)) return OX_EINVALID;
  const unsigned char *p = (const unsigned char *)in;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int last = i + 4 == n;
    int pad = last ? (p[i + 3] == '=') + (p[i + 3] == '=' && p[i + 2] == '=') : 0;
    int v[4];
    for (int k = 0; k < 4 - pad; k++)
      if ((v[k] = b64_val(p[i + k])) < 0) return OX_EINVALID;
    for (int k = 4 - pad; k < 4; k++) v[k] = 0;
    unsigned bits =
        (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
    if (pad == 2 && (bits & 0xffff)) return OX_EINVALID; /* unused bits of "xx==" */
    if (pad == 1 && (bits & 0xff)) return OX_EINVALID;   /* unused bits of "xxx=" */
    out[o++] = (unsigned char)(bits >> 16);
    if (pad < 2) out[o++] = (unsigned char)(bits >> 8);
    if (pad < 1) out[o++] = (unsigned char)bits;
  }
  *outlen = o;
  return 0;
}
