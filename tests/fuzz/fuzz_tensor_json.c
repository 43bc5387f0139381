/* fuzz_tensor_json.c: libFuzzer harness for tensor data JSON (proto/tensor_json.h) and the
 * number conversions under it (proto/numconv.h).
 *
 * Input layout: byte 0 chooses the mode; the rest is text, copied into a buffer of exactly its
 * size so ASan sees a read one past it. Low nibble 0..13: decode the text as datatype (nibble
 * + 1, BOOL .. BYTES) with the element count in the high nibble (0..15); 14 and 15: the text is
 * a lone number token for the parsers. Beyond "no crash", the harness checks:
 *   - decode returns 0, OX_EINVALID or OX_EDEPTH, with a non-empty message on failure;
 *   - text that decodes is valid JSON (ox_json_validate agrees), and fails with one element
 *     more or fewer expected;
 *   - round trip: what decoded encodes to valid JSON that decodes to bitwise the same elements
 *     (NaN cannot occur: the decoder rejects it) and encodes again to the same bytes;
 *   - number tokens: ox_parse_f64/f32 accept exactly the JSON number grammar (checked against a
 *     separately written matcher) and agree bitwise with glibc's strtod/strtof.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/error.h"
#include "proto/json.h"
#include "proto/numconv.h"
#include "proto/tensor_json.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static size_t elem_size(ox_dtype_t dt) {
  return dt == OX_DT_BYTES ? sizeof(ox_slice_t) : ox_dtype_size(dt);
}

static int decode(const char *text, size_t len, ox_dtype_t dt, uint64_t count, void *out,
                  ox_arena_t *arena) {
  char err[96];
  memset(err, 'x', sizeof err);
  int rc = ox_tensor_json_decode(ox_slice(text, len), dt, count, out, arena, err, sizeof err);
  REQUIRE(rc == 0 || rc == OX_EINVALID || rc == OX_EDEPTH);
  if (rc) REQUIRE(memchr(err, 0, sizeof err) != NULL && err[0] != 0);
  return rc;
}

static int same_elements(ox_dtype_t dt, const void *a, const void *b, uint64_t count) {
  if (dt != OX_DT_BYTES) return memcmp(a, b, count * elem_size(dt)) == 0;
  const ox_slice_t *x = a, *y = b;
  for (uint64_t i = 0; i < count; i++)
    if (x[i].len != y[i].len || (x[i].len && memcmp(x[i].ptr, y[i].ptr, x[i].len) != 0)) return 0;
  return 1;
}

static int json_valid(const char *text, size_t len) {
  ox_json_t js;
  ox_json_init(&js, text, len);
  return ox_json_validate(&js) == 0;
}

static void check_decode(const char *text, size_t len, ox_dtype_t dt, uint64_t count) {
  size_t esize = elem_size(dt);
  void *out = malloc(count ? count * esize : 1), *back = malloc(count ? count * esize : 1);
  REQUIRE(out && back);
  ox_arena_t arena;
  ox_arena_init(&arena);
  if (decode(text, len, dt, count, out, &arena) == 0) {
    REQUIRE(json_valid(text, len));
    void *scratch = malloc((count + 1) * esize);
    REQUIRE(scratch);
    REQUIRE(decode(text, len, dt, count + 1, scratch, &arena) == OX_EINVALID);
    if (count) REQUIRE(decode(text, len, dt, count - 1, scratch, &arena) == OX_EINVALID);
    free(scratch);

    ox_buf_t e1, e2;
    ox_buf_init(&e1);
    ox_buf_init(&e2);
    REQUIRE(ox_tensor_json_encode(&e1, dt, out, count) == 0);
    REQUIRE(json_valid(e1.data, e1.len));
    REQUIRE(decode(e1.data, e1.len, dt, count, back, &arena) == 0);
    REQUIRE(same_elements(dt, out, back, count));
    REQUIRE(ox_tensor_json_encode(&e2, dt, back, count) == 0);
    REQUIRE(e1.len == e2.len && memcmp(e1.data, e2.data, e1.len) == 0);
    ox_buf_free(&e1);
    ox_buf_free(&e2);
  }
  ox_arena_free(&arena);
  free(out);
  free(back);
}

/* The JSON number grammar, written as a plain state walk (numconv.cc scans differently, with
 * eight digits at a time), plus numconv's rule that a number must not run on into a byte that
 * could continue one. Returns the token length or 0. */
static size_t reference_number_len(const char *s, size_t n) {
  size_t i = 0, digits;
  if (i < n && s[i] == '-') i++;
  if (i < n && s[i] == '0') {
    i++;
  } else {
    for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) digits++;
    if (digits == 0) return 0;
  }
  if (i < n && s[i] == '.') {
    for (i++, digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) digits++;
    if (digits == 0) return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) digits++;
    if (digits == 0) return 0;
  }
  if (i < n && strchr("0123456789.eE+-", s[i]) && s[i] != 0) return 0;
  return i;
}

static void check_number(const char *text, size_t len) {
  double d = 0;
  float f = 0;
  size_t n64 = ox_parse_f64(text, len, &d), n32 = ox_parse_f32(text, len, &f);
  size_t want = reference_number_len(text, len);
  REQUIRE(n64 == want && n32 == want);
  if (!want) return;
  char *z = malloc(want + 1);
  REQUIRE(z);
  memcpy(z, text, want);
  z[want] = 0;
  double rd = strtod(z, NULL);
  float rf = strtof(z, NULL);
  free(z);
  REQUIRE(memcmp(&d, &rd, sizeof d) == 0);
  REQUIRE(memcmp(&f, &rf, sizeof f) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  unsigned mode = data[0] & 15, count = data[0] >> 4;
  size_t len = size - 1;
  char *text = malloc(len ? len : 1);
  REQUIRE(text);
  memcpy(text, data + 1, len);
  if (mode >= 14)
    check_number(text, len);
  else
    check_decode(text, len, (ox_dtype_t)(OX_DT_BOOL + mode), count);
  free(text);
  return 0;
}
