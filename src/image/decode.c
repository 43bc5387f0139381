/* decode.c: JPEG (libjpeg-turbo's TurboJPEG API) and PNG (libspng) bytes to the 8-bit L or RGB
 * image Pillow's open(...).convert("L"/"RGB") gives.
 *
 * Pillow's mode mapping is the reference (JpegImagePlugin, PngImagePlugin, Unpack.c, Convert.c):
 *   JPEG gray -> L; YCbCr/RGB -> RGB (ISLOW IDCT, fancy upsampling: TurboJPEG's defaults);
 *        CMYK and YCCK -> CMYK read inverted ("CMYK;I": Pillow assumes Adobe polarity for every
 *        4-component JPEG), then Pillow's cmyk2rgb: nk = 255 - k, out = nk - nk * c / 255
 *        with its rounding division.
 *   PNG  gray 1 -> "1" (0/255); gray 2/4 -> L scaled by 0x55/0x11; gray 16 -> I;16, which
 *        convert() CLIPS to 255 (values > 255 become 255, not scaled); RGB/RGBA/GA 16 -> the
 *        high byte; palette -> the PLTE colours (entries past PLTE are black, as Pillow's
 *        zeroed palette), tRNS and alpha ignored (no compositing); no gamma, sRGB or ICC.
 *   L from a colour source: ITU-R 601-2 luma in Pillow's fixed point (ox_img_luma).
 * Headers are read first and the size is checked before any pixel buffer is allocated.
 * libjpeg-turbo warnings (e.g. "Premature end of JPEG file") are errors here
 * (TJFLAG_STOPONWARNING), as are progressive JPEGs with more than 500 scans (TJFLAG_LIMITSCANS).
 */
#include <inttypes.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "core/error.h"
#include "image/img_priv.h"

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

const char *ox_img_sniff(const uint8_t *data, size_t len) {
  if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return "jpeg";
  if (len >= 8 && memcmp(data, png_sig, 8) == 0) return "png";
  return NULL;
}

void ox_img_free(ox_img_t *im) {
  free(im->px);
  im->px = NULL;
}

/* err = what, or "what: detail" */
static int fail(char *err, size_t errcap, const char *what, const char *detail) {
  if (errcap) snprintf(err, errcap, detail ? "%s: %s" : "%s", what, detail);
  return OX_EINVALID;
}

static int check_size(uint32_t w, uint32_t h, uint64_t max_pixels, char *err, size_t errcap) {
  if (!max_pixels) max_pixels = OX_IMG_DEFAULT_MAX_PIXELS;
  if (w == 0 || h == 0) {
    if (errcap) snprintf(err, errcap, "image is %" PRIu32 "x%" PRIu32 ", empty", w, h);
    return OX_EINVALID;
  }
  uint64_t n = (uint64_t)w * h;
  if (n > max_pixels) {
    if (errcap)
      snprintf(err, errcap,
               "image is %" PRIu32 "x%" PRIu32 " (%" PRIu64 " pixels), over the limit of %" PRIu64,
               w, h, n, max_pixels);
    return OX_EINVALID;
  }
  return 0;
}

/* ---- JPEG */

static int jpeg_error(tjhandle tj, char *err, size_t errcap) {
  const char *m = tjGetErrorStr2(tj);
  if (m && (strstr(m, "Premature end") || strstr(m, "premature end")))
    return fail(err, errcap, "truncated JPEG data", m);
  return fail(err, errcap, "corrupt JPEG data", m ? m : "unknown error");
}

static int jpeg_header(tjhandle tj, const uint8_t *data, size_t len, uint32_t *w, uint32_t *h,
                       int *cs, char *err, size_t errcap) {
  int iw, ih, ss, ics;
  if (len > (unsigned long)-1 ||
      tjDecompressHeader3(tj, data, (unsigned long)len, &iw, &ih, &ss, &ics) != 0)
    return jpeg_error(tj, err, errcap);
  if (iw < 0 || ih < 0) return fail(err, errcap, "corrupt JPEG header", NULL);
  *w = (uint32_t)iw;
  *h = (uint32_t)ih;
  *cs = ics;
  return 0;
}

/* Pillow's MULDIV255: a * b / 255 rounded, computed as it does. */
static inline int muldiv255(int a, int b) {
  int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

static int decode_jpeg(const uint8_t *data, size_t len, int c, uint64_t max_pixels, ox_img_t *im,
                       char *err, size_t errcap) {
  tjhandle tj = tjInitDecompress();
  if (!tj) return OX_ENOMEM;
  uint32_t w, h;
  int cs, rc = jpeg_header(tj, data, len, &w, &h, &cs, err, errcap);
  if (rc == 0) rc = check_size(w, h, max_pixels, err, errcap);
  if (rc != 0) {
    tjDestroy(tj);
    return rc;
  }
  int pf = TJPF_RGB, n = 3;
  if (cs == TJCS_GRAY) {
    pf = TJPF_GRAY;
    n = 1;
  } else if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
    pf = TJPF_CMYK;
    n = 4;
  }
  size_t npx = (size_t)w * h, cap = npx * (size_t)(n > c ? n : c);
  uint8_t *px = malloc(cap);
  if (!px) {
    tjDestroy(tj);
    return OX_ENOMEM;
  }
  if (tjDecompress2(tj, data, (unsigned long)len, px, (int)w, 0, (int)h, pf,
                    TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
    rc = jpeg_error(tj, err, errcap);
    tjDestroy(tj);
    free(px);
    return rc;
  }
  tjDestroy(tj);
  if (n == 4) { /* CMYK;I then cmyk2rgb, in place (the output never overtakes the input) */
    for (size_t i = 0; i < npx; i++) {
      const uint8_t *p = px + i * 4;
      int nk = p[3]; /* 255 - (255 - raw k) */
      uint8_t r = (uint8_t)(nk - muldiv255(255 - p[0], nk));
      uint8_t g = (uint8_t)(nk - muldiv255(255 - p[1], nk));
      uint8_t b = (uint8_t)(nk - muldiv255(255 - p[2], nk));
      px[i * 3 + 0] = r;
      px[i * 3 + 1] = g;
      px[i * 3 + 2] = b;
    }
    n = 3;
  }
  if (n == 3 && c == 1) {
    for (size_t i = 0; i < npx; i++) px[i] = ox_img_luma(px[i * 3], px[i * 3 + 1], px[i * 3 + 2]);
  } else if (n == 1 && c == 3) {
    for (size_t i = npx; i-- > 0;) px[i * 3] = px[i * 3 + 1] = px[i * 3 + 2] = px[i];
  }
  im->px = px;
  im->w = w;
  im->h = h;
  im->c = c;
  return 0;
}

/* ---- PNG */

static int png_open(spng_ctx **out, const uint8_t *data, size_t len, struct spng_ihdr *ih,
                    char *err, size_t errcap) {
  spng_ctx *ctx = spng_ctx_new(0);
  if (!ctx) return OX_ENOMEM;
  /* ancillary chunks (text, ICC) are bounded: a chunk over 16 MiB, or more than 64 MiB of them
   * kept, is an error rather than an allocation */
  spng_set_chunk_limits(ctx, 16u << 20, 64u << 20);
  int r = spng_set_png_buffer(ctx, data, len);
  if (r == 0) r = spng_get_ihdr(ctx, ih);
  if (r != 0) {
    spng_ctx_free(ctx);
    if (r == SPNG_EOF) return fail(err, errcap, "truncated PNG data", NULL);
    return fail(err, errcap, "corrupt PNG header", spng_strerror(r));
  }
  *out = ctx;
  return 0;
}

/* Pillow's 8-bit value of sample i of a raw (big-endian, packed) PNG row at depth d. */
static inline unsigned png_gray(const uint8_t *row, size_t i, int d) {
  switch (d) {
    case 1:
      return (row[i >> 3] >> (7 - (i & 7))) & 1 ? 255 : 0;
    case 2:
      return ((row[i >> 2] >> (6 - 2 * (i & 3))) & 3) * 0x55;
    case 4:
      return ((row[i >> 1] >> (4 - 4 * (i & 1))) & 15) * 0x11;
    case 8:
      return row[i];
    default:
      return row[2 * i] ? 255 : row[2 * i + 1]; /* I;16 -> L/RGB clips */
  }
}
static inline unsigned png_index(const uint8_t *row, size_t i, int d) {
  switch (d) {
    case 1:
      return (row[i >> 3] >> (7 - (i & 7))) & 1;
    case 2:
      return (row[i >> 2] >> (6 - 2 * (i & 3))) & 3;
    case 4:
      return (row[i >> 1] >> (4 - 4 * (i & 1))) & 15;
    default:
      return row[i];
  }
}

static void png_convert_row(const uint8_t *row, const struct spng_ihdr *ih, const uint8_t (*pal)[3],
                            int c, uint8_t *out) {
  uint32_t w = ih->width;
  int d = ih->bit_depth, b = d == 16 ? 2 : 1; /* bytes per sample at depth >= 8 */
  switch (ih->color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
      for (uint32_t x = 0; x < w; x++) {
        uint8_t v = (uint8_t)png_gray(row, x, d);
        if (c == 1)
          out[x] = v;
        else
          out[x * 3] = out[x * 3 + 1] = out[x * 3 + 2] = v;
      }
      break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: /* LA (8) or RGBA from LA;16B (16): the high byte */
      for (uint32_t x = 0; x < w; x++) {
        uint8_t v = row[(size_t)x * 2 * b];
        if (c == 1)
          out[x] = v;
        else
          out[x * 3] = out[x * 3 + 1] = out[x * 3 + 2] = v;
      }
      break;
    case SPNG_COLOR_TYPE_INDEXED:
      for (uint32_t x = 0; x < w; x++) {
        const uint8_t *p = pal[png_index(row, x, d)];
        if (c == 1)
          out[x] = ox_img_luma(p[0], p[1], p[2]);
        else
          memcpy(out + x * 3, p, 3);
      }
      break;
    default: { /* RGB or RGBA, 8 or 16 bits: the high byte of each sample */
      int step = (ih->color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA ? 4 : 3) * b;
      for (uint32_t x = 0; x < w; x++) {
        const uint8_t *p = row + (size_t)x * step;
        uint8_t r = p[0], g = p[b], bl = p[2 * b];
        if (c == 1)
          out[x] = ox_img_luma(r, g, bl);
        else {
          out[x * 3] = r;
          out[x * 3 + 1] = g;
          out[x * 3 + 2] = bl;
        }
      }
    }
  }
}

static int decode_png(const uint8_t *data, size_t len, int c, uint64_t max_pixels, ox_img_t *im,
                      char *err, size_t errcap) {
  spng_ctx *ctx;
  struct spng_ihdr ih;
  int rc = png_open(&ctx, data, len, &ih, err, errcap);
  if (rc != 0) return rc;
  rc = check_size(ih.width, ih.height, max_pixels, err, errcap);
  if (rc != 0) {
    spng_ctx_free(ctx);
    return rc;
  }
  uint8_t pal[256][3];
  memset(pal, 0, sizeof pal);
  if (ih.color_type == SPNG_COLOR_TYPE_INDEXED) {
    struct spng_plte plte;
    int r = spng_get_plte(ctx, &plte);
    if (r != 0) {
      spng_ctx_free(ctx);
      return fail(err, errcap, "corrupt PNG data", spng_strerror(r));
    }
    for (uint32_t i = 0; i < plte.n_entries && i < 256; i++) {
      pal[i][0] = plte.entries[i].red;
      pal[i][1] = plte.entries[i].green;
      pal[i][2] = plte.entries[i].blue;
    }
  }
  size_t rawlen;
  int r = spng_decoded_image_size(ctx, SPNG_FMT_RAW, &rawlen);
  if (r != 0) {
    spng_ctx_free(ctx);
    return fail(err, errcap, "corrupt PNG data", spng_strerror(r));
  }
  size_t npx = (size_t)ih.width * ih.height;
  /* zeroed: libspng packs the sub-byte samples of an interlaced image by OR-ing them into the
   * output rows (found under ASan, whose malloc does not hand out zeroed memory) */
  uint8_t *raw = calloc(rawlen ? rawlen : 1, 1), *px = malloc(npx * (size_t)c);
  if (!raw || !px) {
    free(raw);
    free(px);
    spng_ctx_free(ctx);
    return OX_ENOMEM;
  }
  r = spng_decode_image(ctx, raw, rawlen, SPNG_FMT_RAW, 0);
  spng_ctx_free(ctx);
  if (r != 0) {
    free(raw);
    free(px);
    if (r == SPNG_EOF) return fail(err, errcap, "truncated PNG data", NULL);
    return fail(err, errcap, "corrupt PNG data", spng_strerror(r));
  }
  size_t stride = rawlen / ih.height;
  for (uint32_t y = 0; y < ih.height; y++)
    png_convert_row(raw + y * stride, &ih, (const uint8_t(*)[3])pal, c,
                    px + (size_t)y * ih.width * (size_t)c);
  free(raw);
  im->px = px;
  im->w = ih.width;
  im->h = ih.height;
  im->c = c;
  return 0;
}

/* ---- entry points */

int ox_img_read_header(const uint8_t *data, size_t len, uint64_t max_pixels, uint32_t *w,
                       uint32_t *h, char *err, size_t errcap) {
  const char *fmt = ox_img_sniff(data, len);
  int rc;
  if (!fmt) return fail(err, errcap, "not a JPEG or PNG image", NULL);
  if (fmt[0] == 'j') {
    tjhandle tj = tjInitDecompress();
    if (!tj) return OX_ENOMEM;
    int cs;
    rc = jpeg_header(tj, data, len, w, h, &cs, err, errcap);
    tjDestroy(tj);
  } else {
    spng_ctx *ctx;
    struct spng_ihdr ih;
    rc = png_open(&ctx, data, len, &ih, err, errcap);
    if (rc == 0) {
      *w = ih.width;
      *h = ih.height;
      spng_ctx_free(ctx);
    }
  }
  if (rc == 0) rc = check_size(*w, *h, max_pixels, err, errcap);
  return rc;
}

int ox_img_decode(const uint8_t *data, size_t len, int c, uint64_t max_pixels, ox_img_t *im,
                  char *err, size_t errcap) {
  const char *fmt = ox_img_sniff(data, len);
  memset(im, 0, sizeof *im);
  if (!fmt) return fail(err, errcap, "not a JPEG or PNG image", NULL);
  if (fmt[0] == 'j') return decode_jpeg(data, len, c, max_pixels, im, err, errcap);
  return decode_png(data, len, c, max_pixels, im, err, errcap);
}
