/* fuzz_base64.c: libFuzzer harness for the strict base64 decoder (core/base64.h).
 *
 * The input is used twice, each time copied into a buffer of exactly its size (ASan sees a
 * read one past it), with an output buffer of exactly ox_base64_decoded_max bytes:
 *   - as base64 text: when it decodes, encoding the result again gives the input back (one
 *     encoding per byte string: padding and unused bits are checked);
 *   - as raw bytes: their encoding (tests/unit/base64_ref.h) decodes, to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/base64_ref.h"
#include "core/base64.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static char *encode(const unsigned char *in, size_t n, size_t *outlen) {
  char *out = malloc((n + 2) / 3 * 4 + 1);
  REQUIRE(out);
  *outlen = ox_test_base64_encode(in, n, out);
  return out;
}

static unsigned char *decode(const char *text, size_t n, size_t *len, int *rc) {
  char *copy = malloc(n ? n : 1);
  REQUIRE(copy);
  if (n) memcpy(copy, text, n);
  size_t cap = ox_base64_decoded_max(n);
  unsigned char *out = malloc(cap ? cap : 1);
  REQUIRE(out);
  *rc = ox_base64_decode(copy, n, out, cap, len);
  free(copy);
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t len, elen;
  int rc;
  unsigned char *out = decode((const char *)data, size, &len, &rc);
  if (rc == 0) {
    REQUIRE(len <= ox_base64_decoded_max(size));
    char *again = encode(out, len, &elen);
    REQUIRE(elen == size && memcmp(again, data, size) == 0);
    free(again);
  } else {
    REQUIRE(len == 0);
  }
  free(out);
  char *text = encode(data, size, &elen);
  out = decode(text, elen, &len, &rc);
  REQUIRE(rc == 0 && len == size && (size == 0 || memcmp(out, data, size) == 0));
  free(out);
  free(text);
  return 0;
}
