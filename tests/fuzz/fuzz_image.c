/* fuzz_image.c: libFuzzer harness for src/image/ (JPEG/PNG decode, resize, crop, row output).
 *
 * The input is an image file, copied into a buffer of exactly its size (ASan sees a read one
 * past it). A small max_pixels keeps each run fast; the row goes through a spec with a resize,
 * a crop and normalisation. ox_img_row_shape and ox_img_preprocess must agree: whenever the
 * shape is known, the preprocessing either succeeds into a row of that size or refuses with a
 * reason, and never writes past the row.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *copy = malloc(size ? size : 1);
  REQUIRE(copy);
  if (size) memcpy(copy, data, size);
  ox_img_spec_t s;
  ox_img_spec_init(&s);
  s.max_pixels = 1u << 20;
  s.exif_orientation = 1;
  for (int variant = 0; variant < 2; variant++) {
    if (variant == 1) { /* gray, exact resize, FP16 NHWC */
      s.color = OX_IMG_GRAY;
      s.resize = OX_IMG_RESIZE_EXACT;
      s.resize_w = 7;
      s.resize_h = 5;
      s.filter = OX_IMG_LANCZOS;
      s.dtype = OX_DT_FP16;
      s.layout = OX_IMG_NHWC;
    } else {
      s.resize = OX_IMG_RESIZE_SHORTER;
      s.shorter_side = 12;
      s.crop_w = s.crop_h = 8;
      s.scale = 255;
      s.filter = OX_IMG_BICUBIC;
    }
    char err[200];
    uint32_t c, h, w;
    if (ox_img_row_shape(&s, copy, size, &c, &h, &w, err, sizeof err) != 0) {
      REQUIRE(err[0] != 0);
      continue;
    }
    size_t n = (size_t)c * h * w * (s.dtype == OX_DT_FP16 ? 2 : 4);
    void *row = malloc(n ? n : 1);
    REQUIRE(row);
    int rc = ox_img_preprocess(&s, copy, size, row, n, err, sizeof err);
    REQUIRE(rc == 0 || err[0] != 0);
    free(row);
  }
  free(copy);
  return 0;
}
