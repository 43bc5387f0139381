/* fuzz_binary_ext.c: libFuzzer harness for the binary tensor extension's framing
 * (proto/binary_ext.h).
 *
 * Input layout: one byte whose value modulo 4 is the number of header values (none, one, or
 * duplicated headers), the values separated by '\n' up to the first NUL (missing ones are
 * empty), then the body. Every value and the body are copied into
 * buffers of exactly their size so ASan sees a read one past them. Beyond "no crash":
 *   - parse accepts exactly one value of 1 to 19 digits, and then its length is that number;
 *   - the alignment offset is the parsed length for a valid value, else 0;
 *   - a successful split tiles the body: JSON header then binary section, sizes adding up;
 *     it fails exactly when the header length is beyond the body, with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "proto/binary_ext.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static int all_digits(const char *p, size_t n) {
  if (n == 0 || n > OX_BINEXT_MAX_DIGITS) return 0;
  for (size_t i = 0; i < n; i++)
    if (p[i] < '0' || p[i] > '9') return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  size_t n = data[0] % 4;
  const char *in = (const char *)data + 1;
  size -= 1;
  const char *nul = memchr(in, 0, size);
  size_t hlen = nul ? (size_t)(nul - in) : size;
  ox_slice_t values[3] = {{0}};
  char *copies[3] = {NULL, NULL, NULL};
  size_t pos = 0;
  for (size_t k = 0; k < n; k++) {
    const char *nl = pos < hlen ? memchr(in + pos, '\n', hlen - pos) : NULL;
    size_t vlen = pos >= hlen ? 0 : nl ? (size_t)(nl - (in + pos)) : hlen - pos;
    copies[k] = malloc(vlen ? vlen : 1);
    REQUIRE(copies[k]);
    if (vlen) memcpy(copies[k], in + pos, vlen);
    values[k] = ox_slice(copies[k], vlen);
    pos += vlen + 1;
  }
  ox_binext_t f;
  const char *why = NULL;
  int rc = ox_binext_parse(values, n, &f, &why);
  int valid = n == 0 || (n == 1 && all_digits(values[0].ptr, values[0].len));
  REQUIRE((rc == 0) == valid);
  if (rc) {
    REQUIRE(rc == OX_EINVALID && why && why[0]);
    REQUIRE(!f.present);
  } else {
    REQUIRE(f.present == (n == 1));
  }
  if (n >= 1) {
    size_t off = ox_binext_align_offset(values[0]);
    if (all_digits(values[0].ptr, values[0].len)) {
      uint64_t v = 0;
      for (size_t i = 0; i < values[0].len; i++) v = v * 10 + (uint64_t)(values[0].ptr[i] - '0');
      REQUIRE(off == (size_t)v);
    } else {
      REQUIRE(off == 0);
    }
  }
  if (rc == 0) {
    size_t blen = nul ? size - hlen - 1 : 0;
    char *body = blen ? malloc(blen) : NULL;
    if (blen) {
      REQUIRE(body);
      memcpy(body, nul + 1, blen);
    }
    ox_slice_t json, bin;
    char err[128];
    memset(err, 'X', sizeof err);
    int src = ox_binext_split(&f, ox_slice(body, blen), &json, &bin, err, sizeof err);
    if (f.present && f.header_len > blen) {
      REQUIRE(src == OX_EINVALID && memchr(err, 0, sizeof err) && err[0]);
    } else {
      REQUIRE(src == 0);
      REQUIRE(json.ptr == body && json.len + bin.len == blen);
      REQUIRE(json.len == (f.present ? (size_t)f.header_len : blen));
      if (blen) REQUIRE(bin.ptr == body + json.len);
    }
    free(body);
  }
  for (size_t i = 0; i < n; i++) free(copies[i]);
  return 0;
}
