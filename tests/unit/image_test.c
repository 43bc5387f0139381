/* image_test.c: src/image/ — spec checks, sniffing, tiny JPEG/PNG images made here (TurboJPEG
 * and libspng encoders) decoded and checked, and refusals with their one-line reasons. Pixel
 * exactness against Pillow is tests/integration/test_image_exact.py's job. */
#include <spng.h>
#include <turbojpeg.h>

#include "core/error.h"
#include "image/image.h"
#include "test.h"

static char err[256];

/* A w x h RGB JPEG of a colour ramp (owned by the caller, tjFree). */
static unsigned char *make_jpeg(int w, int h, int subsamp, int flags, unsigned long *len) {
  unsigned char *px = malloc((size_t)w * h * 3), *jpg = NULL;
  for (int i = 0; i < w * h * 3; i++) px[i] = (unsigned char)(i * 7);
  tjhandle tj = tjInitCompress();
  if (tjCompress2(tj, px, w, 0, h, TJPF_RGB, &jpg, len, subsamp, 90, flags) != 0) jpg = NULL;
  tjDestroy(tj);
  free(px);
  return jpg;
}

/* A PNG of the given header and raw rows (malloc'ed, caller frees). */
static void *make_png(uint32_t w, uint32_t h, int ct, int depth, const void *raw, size_t rawlen,
                      size_t *len) {
  spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
  struct spng_ihdr ih = {
      .width = w, .height = h, .bit_depth = (uint8_t)depth, .color_type = (uint8_t)ct};
  spng_set_ihdr(ctx, &ih);
  if (ct == SPNG_COLOR_TYPE_INDEXED) {
    struct spng_plte pl = {.n_entries = 2};
    pl.entries[0] = (struct spng_plte_entry){10, 20, 30, 255};
    pl.entries[1] = (struct spng_plte_entry){200, 100, 50, 255};
    spng_set_plte(ctx, &pl);
  }
  int r = spng_encode_image(ctx, raw, rawlen, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  void *out = r == 0 ? spng_get_png_buffer(ctx, len, &r) : NULL;
  spng_ctx_free(ctx);
  return out;
}

TEST(spec_defaults_and_checks) {
  ox_img_spec_t s;
  ox_img_spec_init(&s);
  CHECK_INT(ox_img_spec_check(&s, err, sizeof err), 0);
  uint32_t c, h, w;
  CHECK_INT(ox_img_spec_fixed_dims(&s, &c, &h, &w), 0);
  s.crop_w = 224;
  s.crop_h = 200;
  CHECK_INT(ox_img_spec_fixed_dims(&s, &c, &h, &w), 1);
  CHECK_INT(c, 3);
  CHECK_INT(h, 200);
  CHECK_INT(w, 224);
  s.std[1] = 0;
  CHECK_INT(ox_img_spec_check(&s, err, sizeof err), OX_EINVALID);
  CHECK(strstr(err, "std") != NULL);
  ox_img_spec_init(&s);
  s.dtype = OX_DT_UINT8;
  s.scale = 255;
  CHECK_INT(ox_img_spec_check(&s, err, sizeof err), OX_EINVALID);
  ox_img_spec_init(&s);
  s.dtype = OX_DT_INT32;
  CHECK_INT(ox_img_spec_check(&s, err, sizeof err), OX_EINVALID);
  ox_img_spec_init(&s);
  s.crop_w = 10; /* crop_h 0 */
  CHECK_INT(ox_img_spec_check(&s, err, sizeof err), OX_EINVALID);
  ox_img_spec_init(&s);
  s.resize = OX_IMG_RESIZE_SHORTER;
  CHECK_INT(ox_img_spec_check(&s, err, sizeof err), OX_EINVALID);
}

TEST(sniff) {
  const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0},
                png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  CHECK_STR(ox_img_sniff(jpg, sizeof jpg), "jpeg");
  CHECK_STR(ox_img_sniff(png, sizeof png), "png");
  CHECK(ox_img_sniff(png, 7) == NULL);
  CHECK(ox_img_sniff((const uint8_t *)"GIF89a", 6) == NULL);
  CHECK(ox_img_sniff(NULL, 0) == NULL);
}

TEST(jpeg_decodes_all_flavours) {
  static const int ss[] = {TJSAMP_444, TJSAMP_422, TJSAMP_420, TJSAMP_GRAY};
  for (int i = 0; i < 4; i++) {
    for (int prog = 0; prog < 2; prog++) {
      unsigned long len;
      unsigned char *j = make_jpeg(33, 17, ss[i], prog ? TJFLAG_PROGRESSIVE : 0, &len);
      CHECK(j != NULL);
      if (!j) continue;
      ox_img_spec_t s;
      ox_img_spec_init(&s);
      s.dtype = OX_DT_UINT8;
      uint32_t w = 0, h = 0;
      CHECK_INT(ox_img_probe(&s, j, len, &w, &h, err, sizeof err), 0);
      CHECK_INT(w, 33);
      CHECK_INT(h, 17);
      uint8_t row[33 * 17 * 3];
      CHECK_INT(ox_img_preprocess(&s, j, len, row, sizeof row, err, sizeof err), 0);
      s.color = OX_IMG_GRAY;
      CHECK_INT(ox_img_preprocess(&s, j, len, row, 33 * 17, err, sizeof err), 0);
      /* truncated: refused with the reason */
      CHECK_INT(ox_img_preprocess(&s, j, len * 2 / 3, row, 33 * 17, err, sizeof err), OX_EINVALID);
      CHECK(strstr(err, "JPEG") != NULL);
      tjFree(j);
    }
  }
}

TEST(png_palette_gray16_and_bgr) {
  /* 2x1 palette image: indices 1, 0 */
  uint8_t idx[2] = {1, 0};
  size_t len;
  void *p = make_png(2, 1, SPNG_COLOR_TYPE_INDEXED, 8, idx, 2, &len);
  CHECK(p != NULL);
  ox_img_spec_t s;
  ox_img_spec_init(&s);
  s.dtype = OX_DT_UINT8;
  s.layout = OX_IMG_NHWC;
  uint8_t row[6];
  CHECK_INT(ox_img_preprocess(&s, p, len, row, 6, err, sizeof err), 0);
  const uint8_t rgb[6] = {200, 100, 50, 10, 20, 30};
  CHECK_MEM(row, rgb, 6);
  s.color = OX_IMG_BGR;
  CHECK_INT(ox_img_preprocess(&s, p, len, row, 6, err, sizeof err), 0);
  const uint8_t bgr[6] = {50, 100, 200, 30, 20, 10};
  CHECK_MEM(row, bgr, 6);
  s.color = OX_IMG_GRAY; /* Pillow's L = (r*19595 + g*38470 + b*7471 + 0x8000) >> 16 */
  CHECK_INT(ox_img_preprocess(&s, p, len, row, 2, err, sizeof err), 0);
  CHECK_INT(row[0], (200 * 19595 + 100 * 38470 + 50 * 7471 + 0x8000) >> 16);
  free(p);

  /* 16-bit gray: Pillow's I;16 -> L clips at 255 */
  uint16_t g16[3] = {100, 255, 256}; /* host order for SPNG_FMT_PNG */
  p = make_png(3, 1, SPNG_COLOR_TYPE_GRAYSCALE, 16, g16, sizeof g16, &len);
  CHECK(p != NULL);
  ox_img_spec_init(&s);
  s.color = OX_IMG_GRAY;
  float f[3];
  CHECK_INT(ox_img_preprocess(&s, p, len, f, sizeof f, err, sizeof err), 0);
  CHECK(f[0] == 100.0f && f[1] == 255.0f && f[2] == 255.0f);
  /* FP16 of 255 is 0x5bf8 */
  s.dtype = OX_DT_FP16;
  uint16_t h16[3];
  CHECK_INT(ox_img_preprocess(&s, p, len, h16, sizeof h16, err, sizeof err), 0);
  CHECK_INT(h16[1], 0x5bf8);
  free(p);
}

TEST(refusals) {
  ox_img_spec_t s;
  ox_img_spec_init(&s);
  float f[4];
  CHECK_INT(ox_img_preprocess(&s, (const uint8_t *)"hello", 5, f, sizeof f, err, sizeof err),
            OX_EINVALID);
  CHECK_STR(err, "not a JPEG or PNG image");
  /* over max_pixels, refused from the header */
  unsigned long jl;
  unsigned char *j = make_jpeg(100, 100, TJSAMP_420, 0, &jl);
  s.max_pixels = 9999;
  CHECK_INT(ox_img_probe(&s, j, jl, &(uint32_t){0}, &(uint32_t){0}, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "image is 100x100 (10000 pixels), over the limit of 9999");
  /* crop larger than the image */
  ox_img_spec_init(&s);
  s.crop_w = s.crop_h = 224;
  static float big[3 * 224 * 224];
  CHECK_INT(ox_img_preprocess(&s, j, jl, big, sizeof big, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "image is 100x100, smaller than the 224x224 crop");
  /* wrong row size */
  ox_img_spec_init(&s);
  CHECK_INT(ox_img_preprocess(&s, j, jl, big, 12, err, sizeof err), OX_EINVALID);
  CHECK(strstr(err, "row") != NULL);
  /* corrupt: a byte of the scan data flipped into a marker */
  unsigned char *bad = malloc(jl);
  memcpy(bad, j, jl);
  for (unsigned long i = jl / 2; i < jl / 2 + 40; i++) bad[i] = 0xff;
  ox_img_spec_init(&s);
  CHECK_INT(ox_img_preprocess(&s, bad, jl, big, 3 * 100 * 100 * 4, err, sizeof err), OX_EINVALID);
  free(bad);
  tjFree(j);
  /* zero-size PNG header and a huge one: refused before any pixel is allocated */
  uint8_t png[33] = {0x89, 'P', 'N', 'G',  '\r', '\n', 0x1a, '\n', 0,    0, 0, 13, 'I', 'H', 'D',
                     'R',  0,   0,   0xc3, 0x50, 0,    0,    0xc3, 0x50, 8, 2, 0,  0,   0};
  uint32_t crc = 0; /* libspng checks the CRC: compute it */
  {
    uint32_t c = 0xffffffffu;
    for (int i = 12; i < 29; i++) {
      c ^= png[i];
      for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    crc = ~c;
  }
  png[29] = (uint8_t)(crc >> 24), png[30] = (uint8_t)(crc >> 16), png[31] = (uint8_t)(crc >> 8),
  png[32] = (uint8_t)crc;
  ox_img_spec_init(&s);
  uint32_t w, h;
  CHECK_INT(ox_img_probe(&s, png, sizeof png, &w, &h, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "image is 50000x50000 (2500000000 pixels), over the limit of 40000000");
  CHECK_INT(ox_img_probe(&s, png, 20, &w, &h, err, sizeof err), OX_EINVALID);
}

TEST(resize_and_crop_shape) {
  unsigned long jl;
  unsigned char *j = make_jpeg(50, 20, TJSAMP_444, 0, &jl);
  ox_img_spec_t s;
  ox_img_spec_init(&s);
  s.resize = OX_IMG_RESIZE_SHORTER;
  s.shorter_side = 16;
  uint32_t c, h, w;
  CHECK_INT(ox_img_row_shape(&s, j, jl, &c, &h, &w, err, sizeof err), 0);
  CHECK_INT(h, 16);
  CHECK_INT(w, 40); /* int(16 * 50 / 20) */
  float row[3 * 16 * 40];
  for (int f = OX_IMG_BILINEAR; f <= OX_IMG_LANCZOS; f++) {
    s.filter = (ox_img_filter_t)f;
    CHECK_INT(ox_img_preprocess(&s, j, jl, row, sizeof row, err, sizeof err), 0);
  }
  tjFree(j);
}

TEST_MAIN(T(spec_defaults_and_checks), T(sniff), T(jpeg_decodes_all_flavours),
          T(png_palette_gray16_and_bgr), T(refusals), T(resize_and_crop_shape))
