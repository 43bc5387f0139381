/* fuzz_boot_head.c: libFuzzer harness for the head of a peer's snapshot answer, as
 * --feature-bootstrap reads it (ox_fstream_parse_head, features/fstream_boot.c).
 *
 * The input is copied into a buffer of exactly its size (ASan sees a read one past it) and
 * parsed whole, then as every prefix a read could have delivered (the parser is called again
 * as bytes arrive). Checks: a prefix shorter than a complete answer's head is "more needed"
 * (0); the result of the whole input does not depend on how it arrived; on success the body
 * starts inside the input, right after a blank line, the status has three digits and the
 * stream ID is a NUL-terminated string of digits and '-' that fits its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "features/fstream.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1);
  REQUIRE(buf);
  if (size) memcpy(buf, data, size);
  int status = -5;
  long long clen = -5;
  char id[48];
  size_t off = 0;
  int rc = ox_fstream_parse_head(buf, size, &status, &clen, id, sizeof id, &off);
  REQUIRE(rc >= -1 && rc <= 1);
  if (rc == 1) {
    REQUIRE(off >= 4 && off <= size && !memcmp(buf + off - 4, "\r\n\r\n", 4));
    REQUIRE(status >= 0 && status <= 999);
    REQUIRE(clen >= -1 && clen < 1000000000000000000LL);
    size_t n = strnlen(id, sizeof id);
    REQUIRE(n < sizeof id);
    for (size_t i = 0; i < n; i++) REQUIRE((id[i] >= '0' && id[i] <= '9') || id[i] == '-');
    /* a prefix that ends before the blank line is incomplete */
    for (size_t k = 0; k + 1 < off && k < 64; k++) {
      size_t cut = off - 1 - k;
      int st;
      long long cl;
      char id2[48];
      size_t off2;
      int r2 = ox_fstream_parse_head(buf, cut, &st, &cl, id2, sizeof id2, &off2);
      REQUIRE(r2 == 0 || (r2 == 1 && off2 <= cut)); /* an earlier blank line ends it sooner */
    }
  }
  /* the same bytes with a tiny ID buffer: never written past it */
  char small[2] = {'x', 'x'};
  size_t off3 = 0;
  int st3;
  long long cl3;
  int r3 = ox_fstream_parse_head(buf, size, &st3, &cl3, small, 1, &off3);
  REQUIRE(r3 == rc);
  REQUIRE(small[1] == 'x' && (r3 != 1 || small[0] == 0));
  free(buf);
  return 0;
}
