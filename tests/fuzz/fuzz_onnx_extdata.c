/* fuzz_onnx_extdata.c: libFuzzer harness for the ONNX external-data scanner
 * (runtime/onnx_extdata.h). Input: model bytes. Beyond "no crash": every reported location and
 * name lies inside the input, the error text is a non-empty string on failure, and the lexical
 * location check never accepts an absolute path or a ".." component. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "runtime/onnx_extdata.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

typedef struct {
  const char *base;
  size_t len;
} span_t;

static int inside(const span_t *s, ox_slice_t x) {
  return x.len == 0 ||
         (x.ptr >= s->base && x.len <= s->len && (size_t)(x.ptr - s->base) <= s->len - x.len);
}

static int on_ext(void *ctx, const ox_onnx_ext_t *e, char *err, size_t cap) {
  const span_t *s = ctx;
  REQUIRE(inside(s, e->location) && inside(s, e->name));
  const char *why = NULL;
  if (ox_onnx_extdata_location_ok(e->location, &why) == 0) {
    REQUIRE(e->location.len > 0 && e->location.ptr[0] != '/');
    REQUIRE(!memchr(e->location.ptr, 0, e->location.len));
    for (size_t i = 0; i + 1 < e->location.len; i++)
      if (e->location.ptr[i] == '.' && e->location.ptr[i + 1] == '.')
        REQUIRE((i > 0 && e->location.ptr[i - 1] != '/') ||
                (i + 2 < e->location.len && e->location.ptr[i + 2] != '/'));
  } else {
    REQUIRE(why && why[0]);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  span_t s = {(const char *)data, size};
  char err[256];
  memset(err, 'X', sizeof err);
  int rc = ox_onnx_extdata_scan(data, size, on_ext, &s, err, sizeof err);
  REQUIRE(rc == 0 || rc == OX_EINVALID || rc == OX_EDEPTH);
  if (rc) REQUIRE(memchr(err, 0, sizeof err) && err[0] != 'X');
  return 0;
}
